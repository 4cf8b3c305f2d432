#!/usr/bin/env python3
"""How sockecho-server holds up against hostile clients: tricklers that hold connections open.

    cmake -B build && cmake --build build -j2 && python3 bench/hostile.py

For each K in --tricklers, against a fresh sockecho-server --port 0 (plus any --server-arg): K
tricklers connect, each from its own source 127.1.X.Y, and send one byte every --trickle-interval
seconds, never half-closing (all driven from one thread). Once the server's SIGUSR1 stats line says
it accepted them (or stops growing), sockecho-bench runs the legitimate load (-c 4, 6 B, --seconds,
from 127.0.0.2..9) while the server's RSS and threads are sampled from /proc. Tricklers the server
closed or reset are counted at the end of the load and after --hold more seconds.

Then "memory after slow connections": a fresh server with --timeout --memory-timeout (so idle
workers retire quickly) is warmed up with 10 requests; 256 connections from 256 sources each send
one byte and stop; RSS and threads are measured while held, then all are closed and the threads
polled (up to --settle s) until back to the idle level.

Last, "/health behind silent connections": a fresh server with --metrics 127.0.0.1:0; GET /health
timed alone, then behind --silent (100) connections to the metrics port that send nothing.

Prints a table and the issue's targets, PASS/MISS (a failed legitimate request is a timeout, so
more than 1% of them misses the p99 target); --json PATH writes every number; --smoke is a short
run for CI. Exit status 1 if a server did not exit 0 on SIGTERM, or (with --strict) on a MISS.
Loopback only; server logs in bench/out/hostile-*.log. Raises this process's RLIMIT_NOFILE soft
limit to its hard limit.
"""

import argparse
import heapq
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import common
from common import OUT_DIR, ROOT, Server


def open_slow(count, port):
    """count connections, each from its own source 127.1.X.Y (away from sockecho-bench's
    127.0.0.2..9), each having sent one byte of a request that never ends."""
    socks = []
    try:
        for i in range(count):
            socks.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            socks[-1].bind((f"127.1.{i // 250}.{i % 250 + 1}", 0))
            socks[-1].settimeout(5)
            socks[-1].connect(("127.0.0.1", port))
            socks[-1].sendall(b"x")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class Tricklers:
    """K connections, each from its own source, sending one byte every interval from one thread."""

    def __init__(self, count, port, interval, lifetime):
        self.interval = interval
        self.lifetime = lifetime  # the thread stops by itself after this many seconds
        self.socks = open_slow(count, port)
        self.cut = {}  # index -> (monotonic time, how), written by the thread only
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.stopping = threading.Event()
        for i, sock in enumerate(self.socks):
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, i)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _mark(self, i, how):
        with self.lock:
            self.cut[i] = (time.monotonic(), how)
        self.sel.unregister(self.socks[i])

    def _run(self):
        start = time.monotonic()
        count = len(self.socks)
        # Spread the sends over the interval rather than sending K bytes at once.
        due = [(start + self.interval * (1 + i / count), i) for i in range(count)]
        heapq.heapify(due)
        while not self.stopping.is_set() and time.monotonic() - start < self.lifetime:
            wait = 0.2 if not due else min(0.2, max(0.0, due[0][0] - time.monotonic()))
            events = []
            if self.sel.get_map():
                events = self.sel.select(wait)
            else:  # nothing left to watch (K=0, or all cut)
                self.stopping.wait(wait)
            for key, _ in events:
                try:
                    if not key.fileobj.recv(4096):
                        self._mark(key.data, "closed")
                except ConnectionResetError:
                    self._mark(key.data, "reset")
                except BlockingIOError:
                    pass
            now = time.monotonic()
            while due and due[0][0] <= now:
                when, i = heapq.heappop(due)
                if i in self.cut:
                    continue
                try:
                    self.socks[i].send(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    self._mark(i, "reset")
                    continue
                except BlockingIOError:
                    pass  # the send buffer is full: the server reads nothing; try next time
                heapq.heappush(due, (when + self.interval, i))

    def cut_by(self, moment):
        """How many were cut by then, and how (closed, reset)."""
        with self.lock:
            cuts = list(self.cut.values())
        return sum(1 for when, _ in cuts if when <= moment), sorted({how for _, how in cuts})

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.sel.close()
        for sock in self.socks:
            sock.close()


def run_load(args, bench, server, requests=None):
    """Run sockecho-bench against the server, sampling it; (bench JSON, peak RSS KiB, threads).
    With requests: that many requests from one thread (a warm-up), else -c 4 for --seconds."""
    argv = [bench, "--port", str(server.port), "-c", "1" if requests else "4", "--size", "6",
            "--json", "--quiet", "--timeout", f"{args.client_timeout:g}"]
    argv += ["--requests", str(requests)] if requests else ["--duration", f"{args.seconds:g}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + args.seconds + args.client_timeout + 30
    peak_rss = peak_threads = 0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            rss, threads = server.sample()
            peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    return json.loads(out), peak_rss, peak_threads


def wait_accepted(server, want, limit=5.0):
    """Poll the stats line until `want` connections are active or the count stops growing."""
    deadline = time.monotonic() + limit
    active, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_active = server.stats().get("active", -1)
        if now_active != active:
            active, last_change = now_active, time.monotonic()
        if active >= want or time.monotonic() - last_change >= 1.0:
            break
        time.sleep(0.1)
    return active


def scenario(args, server_bin, bench, k):
    """One K: a fresh server, K tricklers, the legitimate load; a dict of the numbers."""
    row = {"tricklers": k}
    argv = [server_bin, "--port", "0"] + args.server_arg
    with Server(argv, os.path.join(OUT_DIR, f"hostile-k{k}.log")) as server:
        lifetime = args.seconds + args.client_timeout + args.hold + 120
        with Tricklers(k, server.port, args.trickle_interval, lifetime) as tricklers:
            row["accepted"] = wait_accepted(server, k) if k else 0
            row["idle_rss_kib"], row["idle_threads"] = server.sample()
            row["legit"], row["peak_rss_kib"], row["peak_threads"] = run_load(args, bench, server)
            row["cut_during_load"] = tricklers.cut_by(time.monotonic())[0]
            tricklers.stopping.wait(args.hold)
            row["cut_after_hold"], row["cut_how"] = tricklers.cut_by(time.monotonic())
        row["exit_status"] = server.stop()
    return row


def memory(args, server_bin, bench):
    """Memory after slow connections: idle, 256 held, and after they are closed."""
    res = {"server_timeout_s": args.memory_timeout, "settle_limit_s": args.settle}
    argv = [server_bin, "--port", "0"] + args.server_arg + ["--timeout", f"{args.memory_timeout:g}"]
    with Server(argv, os.path.join(OUT_DIR, "hostile-memory.log")) as server:
        run_load(args, bench, server, requests=10)  # warm-up
        res["idle_rss_kib"], res["idle_threads"] = server.sample()
        slow = open_slow(256, server.port)
        try:
            # The server's --timeout also cuts these idle connections, so measure at once.
            res["accepted"] = wait_accepted(server, 256, min(5.0, args.memory_timeout / 2))
            samples = []
            for _ in range(3):
                samples.append(server.sample())
                time.sleep(0.1)
            res["held_rss_kib"], res["held_threads"] = map(max, zip(*samples))
        finally:
            for sock in slow:
                sock.close()
        released = time.monotonic()
        while True:
            rss, threads = server.sample()
            if threads <= res["idle_threads"] and rss <= res["idle_rss_kib"] + 4096:
                break
            if time.monotonic() - released >= args.settle:
                break
            time.sleep(0.25)
        res["settle_s"] = round(time.monotonic() - released, 2)
        res["after_rss_kib"], res["after_threads"] = rss, threads
        res["exit_status"] = server.stop()
    return res


def http_health(port, timeout=30.0):
    """One GET /health on a connection of its own: (milliseconds, status line)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        answer = common.read_to_end(s)
    return (time.monotonic() - start) * 1000, answer.split(b"\r\n", 1)[0].decode(errors="replace")


def health(args, server_bin):
    """GET /health against --metrics, alone and then behind --silent connections that connect and
    send nothing (a health check must never wait for them): the median of 5 tries each."""
    log_path = os.path.join(OUT_DIR, "hostile-health.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([server_bin, "--port", "0", "--metrics", "127.0.0.1:0", "--quiet"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        silent = []
        try:
            proc.stdout.readline()  # listening on ...
            port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])  # metrics on ...
            alone = sorted(http_health(port)[0] for _ in range(5))
            for _ in range(args.silent):
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            tries = [http_health(port) for _ in range(5)]
            behind = sorted(ms for ms, _ in tries)
            statuses = sorted({status for _, status in tries})
        finally:
            for s in silent:
                s.close()
            proc.terminate()
            status = proc.wait(timeout=30)
    return {"silent": args.silent, "alone_ms": alone[2], "behind_ms": behind[2],
            "behind_max_ms": behind[-1], "statuses": statuses, "exit_status": status}


def p99_ok(legit, limit_ms):
    """p99 of correct replies under the limit, and at most 1% of requests failed (a failed
    request is a timeout, far beyond any limit, so more than 1% puts the true p99 above it)."""
    total = legit["ok"] + legit["errors"]
    return legit["ok"] > 0 and legit["errors"] <= 0.01 * total and legit["p99_ms"] < limit_ms


def targets(rows, mem, health_row):
    """The issue's targets as (text, met or None when not measured, detail)."""
    by_k = {r["tricklers"]: r for r in rows}
    out = [(f"GET /health behind {health_row['silent']} silent connections < 100 ms",
            health_row["behind_max_ms"] < 100 and health_row["statuses"] == ["HTTP/1.1 200 OK"],
            f"median {health_row['behind_ms']:.1f} ms, max {health_row['behind_max_ms']:.1f} ms "
            f"(alone {health_row['alone_ms']:.1f} ms), {', '.join(health_row['statuses'])}")]
    if 64 in by_k:
        legit, base = by_k[64]["legit"], by_k.get(0, {}).get("legit", {})
        p99 = f"p99 {legit['p99_ms']:.2f} ms" if legit["ok"] else "no correct reply"
        out.append(("K=64: legitimate p99 < 50 ms", p99_ok(legit, 50.0),
                    f"{p99}, {legit['errors']} errors of {legit['ok'] + legit['errors']}"))
        rps, base_rps = legit["requests_per_s"], base.get("requests_per_s", 0)
        ratio = rps / base_rps if base_rps else float("nan")
        out.append(("K=64: legitimate req/s >= 0.8x K=0", ratio >= 0.8 if base else None,
                    f"{rps:,.0f} vs {base_rps:,.0f} ({ratio:.2f}x)" if base else "K=0 not run"))
    else:
        out.append(("K=64: legitimate p99 < 50 ms, req/s >= 0.8x K=0", None, "K=64 not run"))
    k256 = by_k.get(256)
    if k256:
        rss = k256["idle_rss_kib"] / 1024
        detail = f"{rss:.1f} MiB"
        if k256["accepted"] < 256:
            detail += f", but only {k256['accepted']} accepted (the rest wait in the backlog)"
        out.append(("K=256 held idle: RSS < 64 MiB", rss < 64, detail))
    else:
        out.append(("K=256 held idle: RSS < 64 MiB", None, "K=256 not run"))
    out.append(("memory: threads back to idle level after release",
                mem["after_threads"] <= mem["idle_threads"],
                f"{mem['after_threads']} vs idle {mem['idle_threads']}"))
    grew = (mem["after_rss_kib"] - mem["idle_rss_kib"]) / 1024
    out.append(("memory: RSS within 4 MiB of idle after release", grew <= 4.0,
                f"{grew:+.1f} MiB ({mem['after_rss_kib'] / 1024:.1f} vs "
                f"{mem['idle_rss_kib'] / 1024:.1f} MiB)"))
    return out


def report(args, rows, mem, health_row, checks, elapsed):
    extra = " ".join(args.server_arg) or "(defaults)"
    print(f"sockecho-server {extra}; legitimate load: sockecho-bench -c 4 --size 6 "
          f"--duration {args.seconds:g} (--timeout {args.client_timeout:g}); tricklers send 1 B "
          f"every {args.trickle_interval:g} s; hold {args.hold:g} s after the load")
    print()
    head = (f"{'K':>4} {'accepted':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
            f"{'ok':>7} {'errors':>6} {'idle MiB':>8} {'idle thr':>8} {'peak MiB':>8} "
            f"{'peak thr':>8} {'cut load':>8} {'cut hold':>8} {'exit':>4}")
    print(head)
    print("-" * len(head))
    for r in rows:
        legit = r["legit"]
        lat = [f"{legit[k]:>8.{d}f}" if legit["ok"] else f"{'-':>8}"  # no reply: no latency
               for k, d in (("p50_ms", 3), ("p99_ms", 3), ("max_ms", 1))]
        print(f"{r['tricklers']:>4} {r['accepted']:>8} {legit['requests_per_s']:>9,.0f} "
              f"{' '.join(lat)} "
              f"{legit['ok']:>7} {legit['errors']:>6} {r['idle_rss_kib'] / 1024:>8.1f} "
              f"{r['idle_threads']:>8} {r['peak_rss_kib'] / 1024:>8.1f} {r['peak_threads']:>8} "
              f"{r['cut_during_load']:>8} {r['cut_after_hold']:>8} {r['exit_status']:>4}")
        if legit["first_error"]:
            print(f"     first legitimate error: {legit['first_error']}")
    print()
    print(f"memory after slow connections (server --timeout {args.memory_timeout:g} so idle "
          f"workers retire quickly; it also cuts the held connections after that long):")
    print(f"  idle after 10 requests: {mem['idle_rss_kib'] / 1024:.1f} MiB, "
          f"{mem['idle_threads']} threads")
    print(f"  256 slow held ({mem['accepted']} accepted): {mem['held_rss_kib'] / 1024:.1f} MiB, "
          f"{mem['held_threads']} threads")
    print(f"  after release ({mem['settle_s']:g} s, limit {args.settle:g} s): "
          f"{mem['after_rss_kib'] / 1024:.1f} MiB, {mem['after_threads']} threads; "
          f"exit {mem['exit_status']}")
    print()
    print(f"GET /health on --metrics: {health_row['alone_ms']:.1f} ms alone, "
          f"{health_row['behind_ms']:.1f} ms (max {health_row['behind_max_ms']:.1f}) behind "
          f"{health_row['silent']} connections that send nothing; medians of 5")
    print()
    print("targets:")
    for text, met, detail in checks:
        mark = "n/a " if met is None else ("PASS" if met else "MISS")
        print(f"  {mark}  {text}: {detail}")
    print()
    print(f"hostile.py: {elapsed:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"),
                        help="CMake build directory with sockecho-server and sockecho-bench")
    parser.add_argument("--tricklers", default="0,16,64,256", help="comma-separated K values")
    parser.add_argument("--trickle-interval", type=float, default=1.0,
                        help="seconds between a trickler's bytes")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the legit load")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds to keep the tricklers going after the load")
    parser.add_argument("--client-timeout", type=float, default=10.0,
                        help="sockecho-bench --timeout: how long a stalled request waits")
    parser.add_argument("--memory-timeout", type=float, default=2.0,
                        help="--timeout of the memory part's server")
    parser.add_argument("--settle", type=float, default=40.0,
                        help="longest wait for the threads to go back down after release")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra server argument, repeatable (--server-arg=--workers=128)")
    parser.add_argument("--silent", type=int, default=100,
                        help="silent connections held on --metrics while /health is timed")
    parser.add_argument("--smoke", action="store_true",
                        help="quick run for CI: K=0,16, 1 s loads, short memory part")
    parser.add_argument("--strict", action="store_true", help="exit status 1 on a missed target")
    parser.add_argument("--json", metavar="PATH", help="write every number to PATH")
    args = parser.parse_args()
    if args.smoke:
        args.tricklers, args.seconds, args.hold = "0,16", 1.0, 0.0
        args.memory_timeout, args.settle, args.client_timeout = 1.0, 10.0, 2.0
    ks = [int(k) for k in args.tricklers.split(",") if k.strip()]
    if any(k < 0 or k > 250 * 250 for k in ks):
        sys.exit("hostile.py: --tricklers must be between 0 and 62500")

    server_bin, bench = common.need_programs("hostile.py", args.build,
                                             ["sockecho-server", "sockecho-bench"])
    common.raise_nofile()
    os.makedirs(OUT_DIR, exist_ok=True)
    # SIGTERM unwinds like an error, so that the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("hostile.py: terminated"))

    started = time.monotonic()
    rows = []
    for k in ks:
        print(f"== K={k}", file=sys.stderr, flush=True)
        rows.append(scenario(args, server_bin, bench, k))
    print("== memory after slow connections", file=sys.stderr, flush=True)
    mem = memory(args, server_bin, bench)
    print("== /health behind silent connections", file=sys.stderr, flush=True)
    health_row = health(args, server_bin)
    elapsed = time.monotonic() - started
    checks = targets(rows, mem, health_row)
    report(args, rows, mem, health_row, checks, elapsed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "scenarios": rows, "memory": mem, "health": health_row,
                       "targets": [{"target": t, "met": m, "detail": d} for t, m, d in checks],
                       "elapsed_s": elapsed}, f, indent=2)
    bad_exit = [r.get("tricklers", "memory") for r in rows + [mem, health_row]
                if r["exit_status"] != 0]
    if bad_exit:
        print(f"hostile.py: a server did not exit 0 on SIGTERM ({bad_exit})", file=sys.stderr)
        sys.exit(1)
    if args.strict and any(m is False for _, m, _ in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
