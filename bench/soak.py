#!/usr/bin/env python3
"""Soak run: minutes of mixed load on one sockecho-server, with faults mixed in.

    cmake -B build && cmake --build build -j2 && python3 bench/soak.py --minutes 10

Starts sockecho-server on a free loopback port (echo mode, --timeout 2, --max-bytes 1M, logging
to a file), then, until the time is up:
  - load: sockecho-bench in rounds of 10 s, cycling through small (6 B, 8 threads), medium
    (64 KiB, 4 threads) and large (768 KiB, 2 threads) requests; every reply is checked byte for
    byte, and any error is counted;
  - faults, from two threads of this script: clients that connect and send nothing, that send
    half a request and reset, that send more than --max-bytes, that half-close and never read a
    large reply, that reset mid-reply, and that connect and close at once.
At the end it waits for the daemon to finish what is in flight, then reports requests served,
errors, faults injected, and the daemon's resident memory and open descriptors at the start and
at the end, and stops it with SIGTERM (it must exit 0). Exit status 1 if the bench saw any error,
the daemon died, or it did not exit cleanly. Not part of CI: it takes minutes by design.
"""

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "数据是 ".encode()
TIMEOUT = 2  # the daemon's --timeout, seconds
MAX_BYTES = 1 << 20  # the daemon's --max-bytes
LOAD = [(6, 8), (64 << 10, 4), (768 << 10, 2)]  # (request bytes, threads), in turn


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(pid):
    return {"rss_kib": proc_status(pid, "VmRSS"), "fds": open_fds(pid)}


def reset(sock):
    # SO_LINGER with a zero timeout: close() sends a reset instead of a FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Faults:
    """Fault clients, run in a loop from threads until stopped; counts each kind."""

    def __init__(self, port):
        self.port = port
        self.counts = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def silent(self):  # connect, send nothing, go away after a while (the daemon times out)
        sock = self.connect()
        self.stop.wait(TIMEOUT + 0.5)
        sock.close()

    def half_then_reset(self):
        sock = self.connect()
        sock.sendall(os.urandom(random.randint(1, 200000)))
        reset(sock)

    def oversized(self):
        sock = self.connect()
        try:
            sock.sendall(b"o" * (MAX_BYTES + 1 + random.randint(0, 1 << 20)))
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(1)
            assert reply == b"", "an oversized request was answered"
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed with the request unread: a reset, as documented
        finally:
            sock.close()

    def never_reads(self):  # half-close, then never read a reply larger than the socket buffers
        sock = self.connect()
        sock.sendall(b"r" * (900 << 10))
        sock.shutdown(socket.SHUT_WR)
        self.stop.wait(TIMEOUT + 0.5)
        sock.close()

    def reset_mid_reply(self):
        sock = self.connect()
        sock.sendall(b"m" * (512 << 10))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(4096)
        reset(sock)

    def connect_close(self):
        self.connect().close()

    def run(self, kinds):
        while not self.stop.is_set():
            kind = random.choice(kinds)
            try:
                getattr(self, kind)()
            except OSError:
                pass  # a fault client failing is part of the fault; the daemon is what is judged
            with self.lock:
                self.counts[kind] = self.counts.get(kind, 0) + 1


def bench(binary, port, size, threads, seconds):
    out = subprocess.run(
        [binary, "--port", str(port), "-c", str(threads), "--duration", f"{seconds:.1f}",
         "--size", str(size), "--json", "--quiet", "--timeout", "10"],
        capture_output=True, text=True, timeout=seconds + 60)
    if not out.stdout.strip():
        raise RuntimeError(f"sockecho-bench printed nothing: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--log", default=os.path.join(ROOT, "bench", "out", "soak-server.log"))
    args = parser.parse_args()

    server_bin = os.path.join(args.build, "tools", "sockecho-server")
    bench_bin = os.path.join(args.build, "tools", "sockecho-bench")
    for path in (server_bin, bench_bin):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: build first (see the README)")
    os.makedirs(os.path.dirname(args.log), exist_ok=True)

    # The log goes to a file: a pipe that nobody drains would eventually block the daemon.
    with open(args.log, "w") as log:
        server = subprocess.Popen(
            [server_bin, "--port", "0", "--workers", str(args.workers), "--timeout", str(TIMEOUT),
             "--max-bytes", str(MAX_BYTES)],
            stdout=subprocess.PIPE, stderr=log, text=True)
    ready = server.stdout.readline()
    port = int(ready.rsplit(":", 1)[1])
    start = snapshot(server.pid)
    print(f"soak: {ready.strip()}, pid {server.pid}, {args.minutes:g} min; "
          f"start: RSS {start['rss_kib']} KiB, {start['fds']} descriptors", flush=True)

    try:
        return soak(args, server, port, start, bench_bin)
    finally:
        if server.poll() is None:
            server.kill()  # only reached on an unexpected error: the normal end stops it
            server.wait()


def soak(args, server, port, start, bench_bin):
    faults = Faults(port)
    kinds_a = ["silent", "half_then_reset", "oversized", "connect_close"]
    kinds_b = ["never_reads", "reset_mid_reply", "half_then_reset", "connect_close"]
    fault_threads = [threading.Thread(target=faults.run, args=(k,)) for k in (kinds_a, kinds_b)]
    for t in fault_threads:
        t.start()

    totals = {"ok": 0, "errors": 0, "bytes_sent": 0}
    first_error = ""
    deadline = time.monotonic() + args.minutes * 60
    round_no = 0
    try:
        while time.monotonic() < deadline and server.poll() is None:
            size, threads = LOAD[round_no % len(LOAD)]
            seconds = max(1.0, min(10.0, deadline - time.monotonic()))
            result = bench(bench_bin, port, size, threads, seconds)
            totals["ok"] += result["ok"]
            totals["errors"] += result["errors"]
            totals["bytes_sent"] += result["bytes_sent"]
            first_error = first_error or result["first_error"]
            round_no += 1
            print(f"  round {round_no}: {size} B x{threads}: {result['ok']} ok, "
                  f"{result['errors']} errors, {result['requests_per_s']:.0f} req/s; "
                  f"RSS {proc_status(server.pid, 'VmRSS')} KiB, {open_fds(server.pid)} fds",
                  flush=True)
    finally:
        faults.stop.set()
        for t in fault_threads:
            t.join()

    alive = server.poll() is None
    end = start
    if alive:
        # Connections still in flight end within the timeout; then only the listener is left.
        settle = time.monotonic() + 5 * TIMEOUT
        while open_fds(server.pid) > start["fds"] and time.monotonic() < settle:
            time.sleep(0.2)  # a script, not a test: polling /proc for a few seconds is fine
        end = snapshot(server.pid)
        server.terminate()
    status = server.wait(timeout=60)
    stop_line = ""
    with open(args.log) as f:
        for line in f:
            if " stop accepted=" in line:
                stop_line = line.split(" ", 1)[1].strip()

    print()
    print(f"requests served to sockecho-bench: {totals['ok']} "
          f"({totals['bytes_sent'] / 1e9:.2f} GB of requests echoed), bench errors: "
          f"{totals['errors']}{' (first: ' + first_error + ')' if first_error else ''}")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.counts.items()))
          + f" ({sum(faults.counts.values())} in all)")
    print(f"daemon: {stop_line}")
    print(f"daemon RSS: {start['rss_kib']} KiB at start, {end['rss_kib']} KiB at the end; "
          f"descriptors: {start['fds']} -> {end['fds']}; exit status {status}")
    ok = alive and status == 0 and totals["errors"] == 0 and end["fds"] == start["fds"]
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
