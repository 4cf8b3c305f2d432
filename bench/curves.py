#!/usr/bin/env python3
"""How sockecho-server's cost grows with the work, each curve beside the floor of the same run.

    cmake -B build && cmake --build build -j2 && python3 bench/curves.py

Four curves, on loopback, every load bounded by sockecho-bench --duration:

- concurrency: 6-byte requests at -c 1, 4, 16, 64, 256: requests/s, latency p50/p99 and server
  CPU per request (user + system from /proc/PID/stat, divided by the requests served), for the
  floor (bench/floor.c, 16 threads in accept), sockecho-server on its defaults, two
  sockecho-server --reuseport processes on one port and, when sockecho-bench has --unix,
  sockecho-server --unix;
- size: one client (-c 1), requests of 6 B, 1 KiB, 64 KiB, 1 MiB, 16 MiB and 64 MiB: MB/s and
  peak RSS (VmHWM, reset before each size), for the serial floor and sockecho-server;
- held: 0, 100, 1,000, 3,000 and 10,000 connections held open at once (each has sent one byte
  and waits), sockecho-server on its default workers (held connections wait in its waiting room,
  without one) with --max-connections room for them, the floor with N + 16 threads: RSS, threads
  and descriptors, and the requests/s of 4 clients meanwhile.

The servers of a curve run side by side and take turns within each repetition, so a machine
getting busier affects them alike. Writes bench/CURVES.md and bench/curves-*.svg (gnuplot), and
the raw numbers to bench/out/curves.json, or DIR/curves.json with --out DIR (--redraw redoes the
tables and plots from them).
--smoke: a few points, briefly, written under bench/out/curves-smoke/ (for CI; exit status 1 on
any failed request). Raises this process's RLIMIT_NOFILE soft limit to its hard limit.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import common
import curves_report
from common import OUT_DIR, ROOT, TICKS, Server
from compare import build_floor
from hostile import open_slow

KIB, MIB = 1 << 10, 1 << 20
CONCURRENCY = [1, 4, 16, 64, 256]
SIZES = [6, KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB]
HELD = [0, 100, 1000, 3000, 10000]


class Target:
    """One or more server processes that sockecho-bench addresses as one."""

    def __init__(self, key, title, servers):
        self.key, self.title, self.servers = key, title, servers

    def address(self):
        first = self.servers[0]
        return ["--unix", first.unix_path] if first.unix_path else ["--port", str(first.port)]

    def cpu_ticks(self):
        return sum(s.cpu_ticks() for s in self.servers)


def run_bench(bench, target, concurrency, size, seconds):
    argv = [bench] + target.address() + ["-c", str(concurrency), "--size", str(size),
                                         "--duration", f"{seconds:.3f}", "--json", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure(args, bench, targets, concurrency, size, seconds, peak=False):
    """Warm up, then args.repeat interleaved runs of each target: a summary per target key."""
    for t in targets:
        run_bench(bench, t, concurrency, size, min(seconds, 0.2))
        if peak:
            for s in t.servers:
                s.reset_peak()
    runs = {t.key: {"rps": [], "mbps": [], "p50": [], "p99": [], "ticks": 0, "ok": 0,
                    "errors": 0, "first_error": ""} for t in targets}
    for _ in range(args.repeat):
        for t in targets:
            r = runs[t.key]
            before = t.cpu_ticks()
            out = run_bench(bench, t, concurrency, size, seconds)
            r["ticks"] += t.cpu_ticks() - before
            for key, field in (("rps", "requests_per_s"), ("mbps", "mb_per_s"),
                               ("p50", "p50_ms"), ("p99", "p99_ms")):
                r[key].append(float(out[field]))
            r["ok"] += out["ok"]
            r["errors"] += out["errors"]
            r["first_error"] = r["first_error"] or out["first_error"]
    result = {}
    for t in targets:
        r = runs[t.key]
        result[t.key] = {
            "rps": statistics.median(r["rps"]), "mbps": statistics.median(r["mbps"]),
            "p50": statistics.median(r["p50"]), "p99": statistics.median(r["p99"]),
            "cpu_us": r["ticks"] / TICKS * 1e6 / r["ok"] if r["ok"] else float("nan"),
            "errors": r["errors"], "first_error": r["first_error"],
        }
        if peak:
            result[t.key]["peak_mib"] = max(s.peak_kib() for s in t.servers) / 1024
    return result


def log(text):
    print(text, file=sys.stderr, flush=True)


def show(point, result):
    for key, m in result.items():
        extra = f"  peak {m['peak_mib']:7.1f} MiB" if "peak_mib" in m else ""
        log(f"   {point:>9} {key:12} {m['rps']:9.0f} req/s {m['mbps']:9.1f} MB/s  p99 "
            f"{m['p99']:7.3f} ms  cpu {m['cpu_us']:8.1f} us/req{extra}  errors {m['errors']}")


def start(stack, key, argv):
    return stack.enter_context(Server(argv, os.path.join(OUT_DIR, f"curves-{key}.log"), key))


def concurrency_curve(args, floor, server, bench, unix_dir):
    with ExitStack() as stack:
        targets = [
            Target("floor", "floor (C, 16 threads)",
                   [start(stack, "floor", [floor, "127.0.0.1", "0", "16"])]),
            Target("sockecho", "sockecho-server (defaults)",
                   [start(stack, "sockecho", [server, "--port", "0", "--quiet"])]),
        ]
        first = start(stack, "reuseport-1", [server, "--port", "0", "--reuseport", "--quiet"])
        second = start(stack, "reuseport-2",
                       [server, "--port", str(first.port), "--reuseport", "--quiet"])
        targets.append(Target("reuseport", "2 x sockecho-server --reuseport", [first, second]))
        if unix_dir:
            path = os.path.join(unix_dir, "curves.sock")
            targets.append(Target("unix", "sockecho-server --unix",
                                  [start(stack, "unix", [server, "--unix", path, "--quiet"])]))
        rows = {}
        for c in args.concurrency:
            rows[c] = measure(args, bench, targets, c, 6, args.seconds)
            show(f"c={c}", rows[c])
        titles = {t.key: t.title for t in targets}
        exits = {s.name: s.stop() for t in targets for s in t.servers if s.name != "floor"}
    return {"titles": titles, "rows": rows, "exits": exits}


def size_curve(args, floor, server, bench):
    with ExitStack() as stack:
        targets = [
            Target("floor", "floor (C, serial)",
                   [start(stack, "floor-1", [floor, "127.0.0.1", "0", "1"])]),
            Target("sockecho", "sockecho-server (defaults)",
                   [start(stack, "sockecho-size", [server, "--port", "0", "--quiet"])]),
        ]
        rows = {}
        for size in args.sizes:
            seconds = args.seconds if size < MIB else args.large_seconds
            rows[size] = measure(args, bench, targets, 1, size, seconds, peak=True)
            show(curves_report.size_name(size), rows[size])
        titles = {t.key: t.title for t in targets}
        exits = {"sockecho-size": targets[1].servers[0].stop()}
    return {"titles": titles, "rows": rows, "exits": exits}


def held_sample(srv):
    rss, threads = srv.sample()
    return {"rss_mib": rss / 1024, "threads": threads, "fds": srv.descriptors()}


def hold(args, bench, key, argv, n):
    """A fresh server holding n idle connections: its footprint, and 4 clients' load meanwhile."""
    with Server(argv, os.path.join(OUT_DIR, f"curves-held-{key}.log"), key) as srv:
        target = Target(key, key, [srv])
        run_bench(bench, target, 4, 6, 0.2)  # start-up: first connections, threads
        row = {"idle": held_sample(srv)}
        socks = open_slow(n, srv.port) if n else []
        try:
            # Held once the server has a descriptor for each (or the count stops growing).
            want = row["idle"]["fds"] + n
            deadline, last, since = time.monotonic() + 15, -1, time.monotonic()
            while time.monotonic() < deadline:
                fds = srv.descriptors()
                if fds != last:
                    last, since = fds, time.monotonic()
                if fds >= want or time.monotonic() - since > 1.5:
                    break
                time.sleep(0.1)
            row["held"] = held_sample(srv)
            row["accepted"] = row["held"]["fds"] - row["idle"]["fds"]
            out = run_bench(bench, target, 4, 6, args.seconds)
            row["rps"], row["p99"], row["errors"] = (out["requests_per_s"], float(out["p99_ms"]),
                                                     out["errors"])
            row["during"] = held_sample(srv)
        finally:
            for sock in socks:
                sock.close()
        row["exit"] = srv.stop() if key == "sockecho" else 0
    return row


def held_curve(args, floor, server, bench):
    rows = {}
    for n in args.held:
        rows[n] = {
            "floor": hold(args, bench, "floor", [floor, "127.0.0.1", "0", str(n + 16)], n),
            "sockecho": hold(args, bench, "sockecho",
                             # Default workers: held connections wait without one; room for
                             # them and the load's connections past the default 10,000.
                             [server, "--port", "0", "--quiet", "--max-connections",
                              str(max(n + 128, 10000))], n),
        }
        for key, r in rows[n].items():
            h = r["held"]
            log(f"   held={n:<5} {key:9} accepted {r['accepted']:5}  RSS {h['rss_mib']:7.1f} MiB  "
                f"threads {h['threads']:5}  fds {h['fds']:5}  {r['rps']:8.0f} req/s  "
                f"errors {r['errors']}")
    return {"titles": {"floor": "floor (C, N + 16 threads)",
                       "sockecho": "sockecho-server (default workers)"}, "rows": rows}


def bench_has_unix(bench):
    done = subprocess.run([bench, "--help"], capture_output=True, text=True, timeout=10)
    return "--unix" in done.stdout


def numbers(text, scale=1):
    return [int(float(x) * scale) for x in text.split(",") if x.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"),
                        help="CMake build directory with sockecho-server and sockecho-bench")
    parser.add_argument("--repeat", type=int, default=5, help="runs per server and point")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each run")
    parser.add_argument("--large-seconds", type=float, default=1.5,
                        help="length of each run of 1 MiB and larger requests")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="request bytes")
    parser.add_argument("--held", default=",".join(map(str, HELD)))
    parser.add_argument("--out", help="directory for CURVES.md and the plots (default bench/; "
                        "with --smoke bench/out/curves-smoke/)")
    parser.add_argument("--smoke", action="store_true", help="a few points, briefly (for CI)")
    parser.add_argument("--redraw", action="store_true",
                        help="redo CURVES.md and the plots from bench/out/curves.json")
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.seconds, args.large_seconds = 1, 0.2, 0.2
        args.concurrency, args.sizes, args.held = "1,16", f"6,{64 * KIB}", "0,100"
    out_dir = args.out or (os.path.join(OUT_DIR, "curves-smoke") if args.smoke
                           else os.path.join(ROOT, "bench"))
    # The raw numbers beside the output they belong to, so that a run elsewhere (--out) does not
    # overwrite those of the committed tables.
    raw = (os.path.join(out_dir, "curves.json") if args.out or args.smoke
           else os.path.join(OUT_DIR, "curves.json"))
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    if args.redraw:
        with open(raw) as f:
            curves_report.write(out_dir, json.load(f))
        return
    args.concurrency, args.sizes, args.held = (numbers(args.concurrency), numbers(args.sizes),
                                               numbers(args.held))
    if max(args.held, default=0) > 250 * 250:
        sys.exit("curves.py: --held: at most 62,500 (one source address each)")
    server, bench = common.need_programs("curves.py", args.build,
                                         ["sockecho-server", "sockecho-bench"])
    floor = build_floor()
    nofile = common.raise_nofile()
    if max(args.held, default=0) + 64 > nofile:
        sys.exit(f"curves.py: --held needs more descriptors than the limit of {nofile}")
    # SIGTERM unwinds like an error, so that every server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("curves.py: terminated"))

    unix_dir = None
    if bench_has_unix(bench):
        unix_dir = tempfile.mkdtemp(prefix="sockecho-curves-")
    else:
        log("curves.py: sockecho-bench has no --unix (sockecho-bench --help does not list it); "
            "the Unix-socket curve is left out")
    data = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_start": os.getloadavg(), "repeat": args.repeat, "seconds": args.seconds,
            "large_seconds": args.large_seconds, "build": os.path.relpath(args.build, ROOT),
            "unix": bool(unix_dir), "smoke": args.smoke}
    started = time.monotonic()
    try:
        log("== concurrency (6 B)")
        data["concurrency"] = concurrency_curve(args, floor, server, bench, unix_dir)
        data["load_after_concurrency"] = os.getloadavg()
        log("== request size (-c 1)")
        data["size"] = size_curve(args, floor, server, bench)
        data["load_after_size"] = os.getloadavg()
        log("== connections held open")
        data["held"] = held_curve(args, floor, server, bench)
    finally:
        if unix_dir:
            shutil.rmtree(unix_dir, ignore_errors=True)
    data["load_end"] = os.getloadavg()
    data["elapsed"] = time.monotonic() - started
    with open(raw, "w") as f:
        json.dump(data, f, indent=1)
    curves_report.write(out_dir, data)
    log(f"curves.py: {data['elapsed']:.0f} s; wrote {os.path.relpath(out_dir)}/CURVES.md "
        "and the plots")
    problems = curves_report.problems(data)
    for p in problems:
        log(f"curves.py: {p}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
