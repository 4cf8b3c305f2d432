#!/usr/bin/env python3
"""The daemon's worst case of memory for its clients, measured: sockecho-server --background
with the job queue full of 1 MiB jobs (every job thread running one, --queue more waiting) and
every worker in the middle of a request, then the resident memory of the process (VmRSS).

    cmake -B build && cmake --build build -j2 && python3 bench/memory.py

The stated bound is: each worker's own buffer of up to 1 MiB, plus --max-total-bytes for every
larger request buffer and every job input, queued or running, together (one budget). A second
run with --max-total-bytes below what the jobs want shows the budget refusing (busy) the job
that would go over it, and a large request reset as too_large while the jobs hold the budget.
A third run keeps results (--status): jobs that each print 4 MiB, twice as many as the budget
holds, asked about until each has ended; the outputs of running and ended jobs count against
the same budget, so the oldest results are forgotten and the memory stays within it.
Loopback only; every wait is bounded.
"""

import argparse
import fcntl
import os
import select
import socket
import sys
import tempfile
import time

import common

MIB = 1 << 20


def accepted(port, payload):
    """One job: its request sent whole, the reply read; True for 'accepted ID'."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = common.read_to_end(s)
    return b"accepted " in reply


def settled_rss(server, seconds=10.0):
    """VmRSS (KiB) once three readings 100 ms apart agree, or after `seconds`."""
    deadline = time.monotonic() + seconds
    last = []
    while time.monotonic() < deadline:
        last = (last + [server.sample()[0]])[-3:]
        if len(last) == 3 and max(last) - min(last) < 256:
            break
        time.sleep(0.1)
    return last[-1]


def run(build, workers, jobs, queue, total, gate):
    server_bin = os.path.join(build, "tools", "sockecho-server")
    # Each job reads its input, then waits at the gate until the measurement is done.
    job = ["sh", "-c", 'cat >/dev/null; exec flock -s "$0" true', gate]
    argv = [server_bin, "--port", "0", "--workers", str(workers), "--jobs", str(jobs),
            "--queue", str(queue), "--max-total-bytes", str(total), "--quiet",
            "--background", "--exec"] + job
    log = os.path.join(common.OUT_DIR, "memory.log")
    os.makedirs(common.OUT_DIR, exist_ok=True)
    with common.Server(argv, log) as server:
        base = settled_rss(server)
        payload = os.urandom(MIB)
        acks = [accepted(server.port, payload) for _ in range(jobs + queue + 1)]
        after_jobs = settled_rss(server)
        # A large request while the jobs hold the budget: reset (too_large) when it has no room.
        big_refused = False
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            try:
                s.sendall(os.urandom(4 * MIB))
                s.shutdown(socket.SHUT_WR)
                big_refused = s.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                big_refused = True
        # Every worker mid-request: 1 MiB less one byte sent, no half-close (a worker's own
        # buffer, uncharged), and one connection more than workers waits in the backlog.
        held = []
        for _ in range(workers):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(payload[: MIB - 1])
            held.append(s)
        after_requests = settled_rss(server)
        for s in held:
            s.close()
        server.stop(kill=True)  # the jobs end when the caller lets go of the gate
    return {"base": base, "jobs": after_jobs, "requests": after_requests,
            "accepted": sum(acks), "busy": len(acks) - sum(acks), "big_refused": big_refused}


def ask(port, request):
    """One request to the status listener: its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        s.shutdown(socket.SHUT_WR)
        return common.read_to_end(s).decode(errors="replace")


def next_line(stream, seconds=10.0):
    """The next line a server writes on its stdout (after its ready line), within `seconds`."""
    line = b""
    deadline = time.monotonic() + seconds
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise RuntimeError("no status line")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise RuntimeError("the server ended")
        line += chunk
    return line.decode().strip()


def run_results(build, total, output, count):
    """Jobs printing `output` bytes each, one after another, every result kept until the
    budget forgets the oldest: the resident memory before and after, and what was forgotten."""
    server_bin = os.path.join(build, "tools", "sockecho-server")
    argv = [server_bin, "--port", "0", "--jobs", "1", "--max-total-bytes", str(total),
            "--max-output", str(output), "--quiet", "--background", "--status", "127.0.0.1:0",
            "--exec", "head", "-c", str(output), "/dev/zero"]
    log = os.path.join(common.OUT_DIR, "memory-results.log")
    os.makedirs(common.OUT_DIR, exist_ok=True)
    with common.Server(argv, log) as server:
        status_port = int(next_line(server.proc.stdout).rsplit(":", 1)[1])
        base = settled_rss(server)
        ids = []
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.shutdown(socket.SHUT_WR)
                reply = common.read_to_end(s).decode()
            ids.append(reply.split()[-1])
            deadline = time.monotonic() + 30
            while ask(status_port, "status " + ids[-1]).split()[0] in ("queued", "running"):
                if time.monotonic() > deadline:
                    raise RuntimeError("a job did not end within 30 s")
                time.sleep(0.005)
        after = settled_rss(server)
        kept = sum(1 for i in ids if not ask(status_port, "status " + i).startswith("unknown"))
        server.stop(kill=True)
    return {"base": base, "after": after, "kept": kept}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(common.ROOT, "build"))
    parser.add_argument("--workers", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--queue", type=int, default=64)
    args = parser.parse_args()
    common.need_programs("memory.py", args.build, ["sockecho-server"])
    common.raise_nofile()
    wanted = args.jobs + args.queue
    for total in (1 << 30, (wanted - 4) * MIB):
        with tempfile.TemporaryDirectory() as scratch:
            gate = os.path.join(scratch, "gate")
            # Held exclusively here until the measurement is done.
            fd = os.open(gate, os.O_CREAT | os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                r = run(args.build, args.workers, args.jobs, args.queue, total, gate)
            finally:
                os.close(fd)
        bound = args.workers * MIB + min(total, (wanted + 1) * MIB)
        print(f"--max-total-bytes {total // MIB} MiB, --workers {args.workers}, "
              f"--jobs {args.jobs}, --queue {args.queue}:")
        print(f"  jobs of 1 MiB accepted {r['accepted']}, busy {r['busy']}")
        print(f"  RSS at start {r['base'] / 1024:.1f} MiB; with the jobs "
              f"{r['jobs'] / 1024:.1f} MiB; with every worker mid-request "
              f"{r['requests'] / 1024:.1f} MiB")
        print(f"  held for clients: {(r['requests'] - r['base']) / 1024:.1f} MiB, against the "
              f"bound of {args.workers} x 1 MiB + {min(total, (wanted + 1) * MIB) // MIB} MiB "
              f"of budget in use = {bound // MIB} MiB")
        print(f"  a 4 MiB request while the jobs hold the budget: "
              f"{'reset (too_large)' if r['big_refused'] else 'answered'}")
    total, output = 64 * MIB, 4 * MIB
    count = 2 * total // output
    r = run_results(args.build, total, output, count)
    print(f"--max-total-bytes {total // MIB} MiB, --status, {count} jobs printing "
          f"{output // MIB} MiB each, one after another:")
    print(f"  results kept at the end {r['kept']} of {count} (the oldest forgotten)")
    print(f"  RSS at start {r['base'] / 1024:.1f} MiB; after {r['after'] / 1024:.1f} MiB: "
          f"{(r['after'] - r['base']) / 1024:.1f} MiB held, against the budget of "
          f"{total // MIB} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
