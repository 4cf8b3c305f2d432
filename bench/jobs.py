#!/usr/bin/env python3
"""Acknowledged background jobs: how many a second, and how long the acknowledgement takes.

    cmake -B build && cmake --build build -j2 && python3 bench/jobs.py

Every server takes 64-byte jobs from --concurrency 1 and 16 closed-loop clients and never runs
them, so the figure is the acknowledgement alone:

- sockecho-server --background --jobs 1 --queue 1000000 --exec sleep 3600, in memory; and, where
  the binary has --spool, with a spool on this machine's disk (acknowledged only once the job's
  record is synced), and with the spool's syncs slowed to 2 ms each by bench/slow_sync.c (an
  LD_PRELOAD shim: a real disk's flush can cost that), which shows whether one sync covers every
  job waiting for it (group commit). Load: sockecho-bench --any-reply, a new connection per job
  (what a PHP page does). Stopped with two signals (the queue is not drained).
- beanstalkd (Debian's package; left out when it is not installed) with no consumer: `-b DIR -f 0`
  (a sync per put: the same promise as the spool), `-b DIR` (its default: a sync every 50 ms, a
  weaker promise) and without a binlog. Load: bench/beanstalk_load.c, one put per new connection
  ("conn", like sockecho's) and, beanstalkd's normal use, over one kept connection per client
  ("kept").

Rows are interleaved within each of --repeat rounds; the table gives the median jobs/s and the
median of the rounds' p50 and p99 (milliseconds). With a spool, syncs per acknowledged job come
from the server's own counters (--metrics). The targets of the spool's issue are checked when
--spool exists. --smoke: one short round at 16 clients, exit 1 on any failed request; CI's check
that the benchmark still works. --results PATH rewrites this script's section of PATH
(bench/RESULTS.md). Loopback only; everything started is stopped on the way out.

--fairness measures the turns between sources instead: source A (127.0.0.2, sockecho-bench -c 8
--sources 1) floods a server with 50 ms jobs at full rate, while source B (127.0.0.3) submits
one job every 50 ms; each of B's jobs writes the time it started, and its wait is from just
before its submission to that start (p50, p99). The server runs --jobs 4 --queue 1000
--max-queued-per-source 200, once as sockecho-server (turns on) and once as bench/turns_daemon.cpp
(the same flags, parser and Daemon with turns off: strictly first come, first served), rounds
interleaved. The target: B's p99 within one round of --jobs plus the flood's own run time (two
50 ms runs), with turns; without them, B waits behind A's queue. Its section of RESULTS.md is
"jobs.py --fairness".
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import sections
from common import free_port, wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
OUT = os.path.join(BENCH, "out")
SIZE = 64


def build_c(name, shared=False):
    """bench/NAME.c built into bench/out (again when the source is newer)."""
    os.makedirs(OUT, exist_ok=True)
    binary = os.path.join(OUT, name + (".so" if shared else ""))
    source = os.path.join(BENCH, name + ".c")
    if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(source):
        cc = os.environ.get("CC", "cc")
        flags = ["-shared", "-fPIC"] if shared else ["-pthread"]
        subprocess.run([cc, "-O2", *flags, "-o", binary, source] + (["-ldl"] if shared else []),
                       check=True)
    return binary


class Row:
    """One server configuration: how to start it, and how to load it."""

    def __init__(self, key, title, start, load, spool=False):
        self.key, self.title, self.start, self.load, self.spool = key, title, start, load, spool
        self.rounds = {}  # concurrency -> [result dicts]


class Sockecho:
    """sockecho-server --background with a queue that never fills and jobs that never start."""

    def __init__(self, build, spool_dir=None, preload=None):
        self.server = os.path.join(build, "tools", "sockecho-server")
        self.spool_dir, self.preload = spool_dir, preload
        self.proc, self.port, self.metrics_port = None, None, None

    def __enter__(self):
        argv = [self.server, "--port", "0", "--quiet", "--background", "--jobs", "1", "--queue",
                "1000000", "--exec-timeout", "0"]
        if self.spool_dir:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
            argv += ["--spool", self.spool_dir, "--metrics", "127.0.0.1:0"]
        argv += ["--exec", "sleep", "3600"]
        env = dict(os.environ)
        if self.preload:
            env["LD_PRELOAD"] = self.preload
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        self.port = int(self.proc.stdout.readline().rsplit(":", 1)[1])
        if self.spool_dir:
            self.metrics_port = int(self.proc.stdout.readline().rsplit(":", 1)[1])
        return self

    def counters(self):
        """sockecho_spool_syncs_total and sockecho_jobs_accepted_total, from --metrics."""
        if not self.metrics_port:
            return {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("sockecho_spool_syncs_total", "sockecho_jobs_accepted_total"):
                out[name] = float(value)
        return out

    def __exit__(self, *exc):
        # The queue is not drained: a second signal ends it (signals sent at once may merge
        # into one, so they are repeated until it has gone).
        for _ in range(80):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Beanstalkd:
    """beanstalkd on a free port, with the binlog flags given, and no consumer."""

    def __init__(self, flags):
        self.flags = flags
        self.proc, self.port, self.dir = None, None, None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="sockecho-jobs-beanstalkd-")
        flags = [f.replace("{dir}", self.dir) for f in self.flags]
        for _ in range(20):  # beanstalkd has no port 0: a free port, tried until one binds
            port = free_port()
            self.proc = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port), *flags],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_listening(port, self.proc)
            except RuntimeError:
                if self.proc.poll() is None:  # running, yet not listening: no retry helps
                    self.proc.kill()
                    self.proc.wait()
                    raise
                continue  # it exited: the port was taken meanwhile
            self.port = port
            return self
        raise RuntimeError("beanstalkd: no free port it could bind")

    def counters(self):
        return {}

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def sockecho_load(build):
    bench = os.path.join(build, "tools", "sockecho-bench")

    def run(server, concurrency, seconds):
        argv = [bench, "--port", str(server.port), "-c", str(concurrency), "--size", str(SIZE),
                "--any-reply", "--duration", str(seconds), "--json", "--quiet"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        r = json.loads(done.stdout)
        accepted = r["replies"].get("accepted", 0)
        # Anything but "accepted" (busy, a reset) is a failed submission here.
        return {"ok": accepted, "errors": r["errors"] + r["ok"] - accepted,
                "rate": accepted / r["seconds"], "p50": float(r["p50_ms"]),
                "p99": float(r["p99_ms"])}
    return run


def beanstalk_load(mode):
    binary = build_c("beanstalk_load")

    def run(server, concurrency, seconds):
        done = subprocess.run([binary, str(server.port), str(concurrency), str(seconds), str(SIZE),
                               mode], capture_output=True, text=True, timeout=seconds + 120)
        r = json.loads(done.stdout)
        return {"ok": r["ok"], "errors": r["errors"], "rate": r["requests_per_s"],
                "p50": r["p50_ms"], "p99": r["p99_ms"]}
    return run


def rows_for(args, scratch):
    server = os.path.join(args.build, "tools", "sockecho-server")
    help_text = subprocess.run([server, "--help"], capture_output=True, text=True).stdout
    load = sockecho_load(args.build)
    rows = [Row("memory", "sockecho, in memory", lambda: Sockecho(args.build), load)]
    if "--spool" in help_text:
        spool = os.path.join(scratch, "spool")
        shim = build_c("slow_sync", shared=True)
        rows.append(Row("spool", "sockecho --spool (this disk)",
                        lambda: Sockecho(args.build, spool), load, spool=True))
        rows.append(Row("spool-slow", "sockecho --spool, syncs slowed to 2 ms",
                        lambda: Sockecho(args.build, spool, shim), load, spool=True))
    else:
        print("jobs.py: this sockecho-server has no --spool yet; its rows are left out",
              file=sys.stderr)
    if shutil.which("beanstalkd"):
        for key, title, flags, modes in (
                ("bs-f0", "beanstalkd -b -f 0 (a sync per put)", ["-b", "{dir}", "-f", "0"],
                 ("conn", "kept")),
                ("bs-b", "beanstalkd -b (a sync every 50 ms)", ["-b", "{dir}"], ("conn",)),
                ("bs-none", "beanstalkd, no binlog", [], ("conn", "kept"))):
            for mode in modes:
                rows.append(Row(f"{key}-{mode}", f"{title}, {mode}",
                                lambda flags=flags: Beanstalkd(flags), beanstalk_load(mode)))
    else:
        print("jobs.py: beanstalkd not found (apt-get install beanstalkd); left out",
              file=sys.stderr)
    return rows


FAIR_RUN = 0.05  # seconds each flood job runs
FAIR_JOBS = 4


def build_turns_daemon(build):
    """bench/turns_daemon.cpp against the build's static libraries, into bench/out."""
    os.makedirs(OUT, exist_ok=True)
    binary = os.path.join(OUT, "turns_daemon")
    source = os.path.join(BENCH, "turns_daemon.cpp")
    libs = [os.path.join(build, "tools", "libsockecho_cli.a"), os.path.join(build, "libsockecho.a")]
    if (not os.path.exists(binary) or
            any(os.path.getmtime(binary) < os.path.getmtime(f) for f in [source] + libs)):
        cxx = os.environ.get("CXX", "g++")
        subprocess.run([cxx, "-std=c++17", "-O2", "-I", os.path.join(ROOT, "include"), "-I",
                        os.path.join(build, "include"), "-I", os.path.join(ROOT, "tools"), source,
                        *libs, "-pthread", "-o", binary], check=True)
    return binary


def submit_from(source, port, payload):
    """One job from the address `source`: the reply's words."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply.decode(errors="replace").split()


def fair_round(binary, build, seconds, scratch):
    """One flood from A with B's jobs among it: B's waits in milliseconds, A's accepted count."""
    marks = tempfile.mkdtemp(prefix="fair-", dir=scratch)
    script = ('read what; [ "$what" = b ] && date +%s%N > "$0/$SOCKECHO_JOB_ID"; '
              f"sleep {FAIR_RUN}")
    argv = [binary, "--port", "0", "--quiet", "--background", "--jobs", str(FAIR_JOBS),
            "--queue", "1000", "--max-queued-per-source", "200", "--exec-timeout", "0",
            "--exec", "sh", "-c", script, marks]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        flood = subprocess.Popen(
            [os.path.join(build, "tools", "sockecho-bench"), "--port", str(port), "-c", "8",
             "--sources", "1", "--size", "8", "--any-reply", "--duration", str(seconds),
             "--json", "--quiet"], stdout=subprocess.PIPE, text=True)
        time.sleep(min(0.5, seconds / 4))  # ok-sleep: the flood fills its share of the queue
        submitted = {}
        end = time.monotonic() + seconds / 2
        while time.monotonic() < end:
            at = time.time_ns()
            words = submit_from("127.0.0.3", port, b"b\n")
            if words[:1] == ["accepted"]:
                submitted[words[1]] = at
            time.sleep(FAIR_RUN)  # ok-sleep: B's pace, one job per flood run
        out, _ = flood.communicate(timeout=seconds + 60)
        flooded = json.loads(out)["replies"].get("accepted", 0)
        # B's jobs start within the queue's drain at worst: 200 queued / 4 jobs x 50 ms.
        deadline = time.monotonic() + 30
        waits = []
        for job, at in submitted.items():
            path = os.path.join(marks, job)
            # The shell creates the file before date writes into it: read until it holds a time.
            while time.monotonic() < deadline:
                try:
                    with open(path) as f:
                        waits.append((int(f.read().strip()) - at) / 1e6)
                    break
                except (OSError, ValueError):
                    time.sleep(0.01)  # ok-sleep: a job's mark, written by another process
        return waits, flooded, len(submitted)
    finally:
        for _ in range(80):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fairness(args):
    """The turns between sources, on and off: lines for the report, and whether B waited too
    long with turns on (the target)."""
    server = os.path.join(args.build, "tools", "sockecho-server")
    modes = [("on", "turns on (sockecho-server)", server),
             ("off", "turns off (bench/turns_daemon.cpp)", build_turns_daemon(args.build))]
    results = {key: {"waits": [], "flooded": 0, "submitted": 0, "started": 0} for key, _, _ in modes}
    scratch = tempfile.mkdtemp(prefix="sockecho-fair-")
    started = time.monotonic()
    try:
        for round_ in range(args.repeat):
            order = modes if round_ % 2 == 0 else list(reversed(modes))
            for key, _, binary in order:
                waits, flooded, submitted = fair_round(binary, args.build, args.seconds, scratch)
                r = results[key]
                r["waits"] += waits
                r["flooded"] += flooded
                r["submitted"] += submitted
                r["started"] += len(waits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    bound = 2 * FAIR_RUN * 1000
    lines = [f"{args.repeat} round(s) of {args.seconds:g} s, modes interleaved; "
             f"{time.monotonic() - started:.0f} s in all. --jobs {FAIR_JOBS}, flood jobs of "
             f"{FAIR_RUN * 1000:.0f} ms; B's wait from submission to start.", "",
             "| server | A's jobs accepted | B's jobs | B's wait p50 ms | B's wait p99 ms | max ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, title, _ in modes:
        r = results[key]
        w = sorted(r["waits"])
        if not w:
            lines.append(f"| {title} | {r['flooded']:,} | 0 | | | |")
            continue
        p99 = w[min(len(w) - 1, int(len(w) * 0.99))]
        lines.append(f"| {title} | {r['flooded']:,} | {r['started']} of {r['submitted']} | "
                     f"{statistics.median(w):.1f} | {p99:.1f} | {w[-1]:.1f} |")
    on = sorted(results["on"]["waits"])
    met = bool(on) and on[min(len(on) - 1, int(len(on) * 0.99))] <= bound
    lines += ["", f"Target: B's p99 with turns <= one round of --jobs plus the flood's own run "
              f"({bound:.0f} ms): {'MET' if met else 'NOT MET'}."]
    return lines, met, results


def median_of(results, key):
    return statistics.median(r[key] for r in results)


def table(rows, concurrency):
    lines = [f"| server | clients | jobs/s | p50 ms | p99 ms | failed | syncs/job |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        results = row.rounds.get(concurrency, [])
        if not results:
            continue
        syncs = [r["syncs_per_job"] for r in results if "syncs_per_job" in r]
        lines.append(f"| {row.title} | {concurrency} | {median_of(results, 'rate'):,.0f} | "
                     f"{median_of(results, 'p50'):.3f} | {median_of(results, 'p99'):.3f} | "
                     f"{sum(r['errors'] for r in results)} | "
                     f"{statistics.median(syncs):.2f} |" if syncs else
                     f"| {row.title} | {concurrency} | {median_of(results, 'rate'):,.0f} | "
                     f"{median_of(results, 'p50'):.3f} | {median_of(results, 'p99'):.3f} | "
                     f"{sum(r['errors'] for r in results)} | |")
    return lines


def targets(rows):
    """The spool issue's targets at 16 clients: (text, met or None, detail)."""
    by = {row.key: row.rounds.get(16, []) for row in rows}

    def rate(key):
        return median_of(by[key], "rate") if by.get(key) else None

    out = []
    spool, memory, f0 = rate("spool"), rate("memory"), rate("bs-f0-conn")
    if spool is None:
        return [("sockecho --spool targets", None, "--spool not built yet")]
    out.append(("--spool >= 1.5x beanstalkd -f 0", spool >= 1.5 * f0 if f0 else None,
                f"{spool:,.0f} vs {f0:,.0f}" if f0 else "beanstalkd not run"))
    out.append(("--spool >= 0.8x in memory", spool >= 0.8 * memory, f"{spool:,.0f} vs {memory:,.0f}"))
    p99, p99_memory = median_of(by["spool"], "p99"), median_of(by["memory"], "p99")
    out.append(("--spool p99 <= 2x in memory", p99 <= 2 * p99_memory,
                f"{p99:.3f} vs {p99_memory:.3f} ms"))
    slow = rate("spool-slow")
    syncs = [r["syncs_per_job"] for r in by["spool-slow"] if "syncs_per_job" in r]
    if syncs:
        out.append(("2 ms syncs: syncs per job < 0.5", statistics.median(syncs) < 0.5,
                    f"{statistics.median(syncs):.2f}"))
    out.append(("2 ms syncs: >= 2,000 jobs/s", slow >= 2000, f"{slow:,.0f}"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--results", help="the Markdown file whose jobs.py section to rewrite "
                                          "(bench/RESULTS.md)")
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="one short round at 16 clients; exit 1 on a failed request")
    parser.add_argument("--fairness", action="store_true",
                        help="measure the turns between sources instead (see above)")
    args = parser.parse_args()
    if args.fairness:
        if args.smoke:
            args.repeat, args.seconds = 1, 1.0
        lines, met, results = fairness(args)
        print("\n".join(lines))
        if args.results:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            sections.write(args.results, "jobs.py-fairness",
                           "## Turns between sources: one source floods, another's jobs wait\n\n"
                           f"Generated by `python3 bench/jobs.py --fairness` on {when}. " +
                           "\n".join(lines))
        if args.smoke and not results["on"]["waits"]:
            print("jobs.py --fairness: none of B's jobs started", file=sys.stderr)
            sys.exit(1)
        return
    if args.smoke:
        args.repeat, args.seconds, args.concurrency = 1, 0.5, "16"
    levels = [int(c) for c in args.concurrency.split(",")]
    started = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="sockecho-jobs-")
    try:
        rows = rows_for(args, scratch)
        for _ in range(args.repeat):
            for concurrency in levels:
                for row in rows:
                    with row.start() as server:
                        r = row.load(server, concurrency, args.seconds)
                        counters = server.counters()
                        if counters.get("sockecho_jobs_accepted_total"):
                            r["syncs_per_job"] = (counters.get("sockecho_spool_syncs_total", 0) /
                                                  counters["sockecho_jobs_accepted_total"])
                    row.rounds.setdefault(concurrency, []).append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    lines = [f"{len(levels)} concurrency levels, {args.repeat} round(s) of {args.seconds:g} s, "
             f"{SIZE}-byte jobs, rows interleaved; medians of the rounds; {elapsed:.0f} s in all.",
             ""]
    for concurrency in levels:
        lines += table(rows, concurrency) + [""]
    checks = targets(rows)
    lines.append("Targets (16 clients):")
    for text, met, detail in checks:
        mark = "n/a " if met is None else ("PASS" if met else "MISS")
        lines.append(f"- {mark} {text}: {detail}")
    print("\n".join(lines))
    if args.results:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        sections.write(args.results, "jobs.py",
                       "## Acknowledged jobs: in memory, with a spool, and beanstalkd\n\n"
                       f"Generated by `python3 bench/jobs.py` on {when}. " + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({row.key: row.rounds for row in rows}, f, indent=2)
    failed = sum(r["errors"] for row in rows for rs in row.rounds.values() for r in rs)
    if args.smoke and failed:
        print(f"jobs.py: {failed} failed submissions", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
