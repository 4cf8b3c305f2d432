#!/usr/bin/env python3
"""The status listener (--status) under load: does asking about jobs slow their acknowledgement?

    cmake -B build && cmake --build build -j2 && python3 bench/status.py

The issue's targets: status requests at a fixed 1,000 a second while jobs are submitted at full
rate, and the job rate stays at least 0.9x the rate without them, in the same run; and the status
requests a second alone at 16 clients.

Every row runs on sockecho-server --background --jobs 1 --queue 1000000 --status 127.0.0.1:0
--exec sleep 3600, in memory: jobs never run, so the job figure is the acknowledgement alone (as
in bench/jobs.py). Before each row two 64-byte jobs are submitted: the first takes the one worker
(running), the second stays queued, and every status request asks about it (`status ID`, the
reply `queued id=ID ...`). Three rows:

- (a) jobs alone: sockecho-bench -c 16 --size 64 --any-reply --duration S (jobs.py's load, a new
  connection per job);
- (b) the same jobs load, and at the same time bench/status_load.c paced at 1,000 status
  requests a second (absolute deadlines: a slow reply delays no later request; its achieved rate,
  late starts and p99, measured from each request's due time, are reported);
- (c) status alone: status_load in a closed loop, 16 clients, a new connection per request.

A fresh server per row: each row then starts from the same state (two jobs, an empty accept
queue, a fresh status listener), whereas on one server for all the rows every row would inherit
the jobs the rows before it queued (tens of thousands a second) and (b), run after (a), would
always meet the longer queue. Rows are interleaved within each of --repeat rounds, in reverse
order every other round so that no row always runs first after a pause; the ratio (b)/(a) is
taken within each round (the two ran seconds apart) and the target is judged on its median.
The table gives the median of the rounds and their min-max spread.

--smoke: one short round, exit 1 on any failed request; CI's check that the benchmark still
works. --results PATH rewrites this script's section of PATH (bench/RESULTS.md); --json PATH
writes every round's numbers. Loopback only; every server is stopped on the way out (two
SIGTERMs: the queue is not drained), and every load has a bounded run.
"""

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import sections
from common import need_programs, read_to_end
from jobs import build_c

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
CLIENTS = 16
STATUS_RATE = 1000
TARGET_RATIO = 0.9
ROWS = ("jobs", "both", "status")
TITLES = {
    "jobs": f"(a) jobs alone, sockecho-bench -c {CLIENTS}",
    "both": f"(b) the same jobs + status paced at {STATUS_RATE:,}/s",
    "status": f"(c) status alone, closed loop, {CLIENTS} clients",
}


class Server:
    """sockecho-server --background --status with jobs that never start: one running, one queued
    (self.queued_id, the ID the status requests ask about)."""

    def __init__(self, server):
        self.server = server
        self.proc, self.port, self.status_port, self.queued_id = None, None, None, None

    def __enter__(self):
        argv = [self.server, "--port", "0", "--quiet", "--background", "--jobs", "1", "--queue",
                "1000000", "--exec-timeout", "0", "--status", "127.0.0.1:0",
                "--exec", "sleep", "3600"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        try:
            self.port = self._ready("listening on ")
            self.status_port = self._ready("status on ")
            self._submit()  # the first takes the one worker: running
            self.queued_id = self._submit()
            reply = self.ask(self.queued_id)
            if not reply.startswith(f"queued id={self.queued_id} "):
                raise RuntimeError(f"status.py: the second job is not queued: {reply!r}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self, prefix):
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            raise RuntimeError(f"sockecho-server: expected '{prefix}...', got {line!r}")
        return int(line.rsplit(":", 1)[1])

    @staticmethod
    def _exchange(port, data):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_to_end(s).decode()

    def _submit(self):
        reply = self._exchange(self.port, b"j" * SIZE)
        if not reply.startswith("accepted ") or not reply.endswith("\n"):
            raise RuntimeError(f"status.py: a job was not accepted: {reply!r}")
        return reply.split()[1]

    def ask(self, job_id):
        return self._exchange(self.status_port, f"status {job_id}\n".encode())

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
        self.proc.stdout.close()


def start_jobs_load(bench, server, seconds):
    """sockecho-bench as jobs.py runs it, started; finish_jobs_load() waits for its numbers."""
    argv = [bench, "--port", str(server.port), "-c", str(CLIENTS), "--size", str(SIZE),
            "--any-reply", "--duration", str(seconds), "--json", "--quiet"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_jobs_load(proc, seconds):
    try:
        out, err = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0 and not out:
        raise RuntimeError(f"sockecho-bench failed ({proc.returncode}): {err.strip()}")
    r = json.loads(out)
    accepted = r["replies"].get("accepted", 0)
    # Anything but "accepted" (busy, a reset) is a failed submission here.
    return {"ok": accepted, "errors": r["errors"] + r["ok"] - accepted,
            "rate": accepted / r["seconds"], "p50": float(r["p50_ms"]),
            "p99": float(r["p99_ms"])}


def start_status_load(binary, server, seconds, mode):
    """status_load paced at STATUS_RATE ("paced") or closed loop at CLIENTS ("closed"), started."""
    argv = [binary, str(server.status_port), server.queued_id, str(seconds), mode,
            str(STATUS_RATE if mode == "paced" else CLIENTS)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_status_load(proc, seconds):
    try:
        out, err = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"status_load failed ({proc.returncode}): {err.strip()}")
    r = json.loads(out)
    return {"ok": r["ok"], "errors": r["errors"] + r.get("missed", 0),
            "rate": r["requests_per_s"], "p50": r["p50_ms"], "p99": r["p99_ms"],
            "late": r.get("late"), "first_error": r["first_error"]}


def run_row(key, programs, seconds):
    """One row on a fresh server: {"jobs": {...}} and/or {"status": {...}}."""
    with Server(programs.server) as server:
        jobs = status = None
        if key in ("jobs", "both"):
            jobs = start_jobs_load(programs.bench, server, seconds)
        if key in ("both", "status"):
            status = start_status_load(programs.status_load, server, seconds,
                                       "paced" if key == "both" else "closed")
        out = {}
        try:
            if jobs:
                out["jobs"] = finish_jobs_load(jobs, seconds)
            if status:
                out["status"] = finish_status_load(status, seconds)
        finally:
            for proc in (jobs, status):
                if proc and proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return out


Programs = collections.namedtuple("Programs", "server bench status_load")


def programs_in(build):
    """sockecho-server and sockecho-bench from the build, bench/status_load.c built."""
    server, bench = need_programs("status.py", build, ["sockecho-server", "sockecho-bench"])
    return Programs(server, bench, build_c("status_load"))


def spread(values, fmt):
    """'median (min-max)' of the rounds."""
    if not values:
        return ""
    text = format(statistics.median(values), fmt)
    return text if len(values) == 1 else \
        f"{text} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def table(rounds):
    lines = ["| row | jobs/s | jobs p99 ms | status/s | status p99 ms | status late | failed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in ROWS:
        results = [r[key] for r in rounds]
        jobs = [r["jobs"] for r in results if "jobs" in r]
        status = [r["status"] for r in results if "status" in r]
        late = [s["late"] for s in status if s["late"] is not None]
        failed = sum(x["errors"] for x in jobs + status)
        lines.append(f"| {TITLES[key]} | {spread([j['rate'] for j in jobs], ',.0f')} | "
                     f"{spread([j['p99'] for j in jobs], '.2f')} | "
                     f"{spread([s['rate'] for s in status], ',.0f')} | "
                     f"{spread([s['p99'] for s in status], '.2f')} | "
                     f"{spread(late, 'd')} | {failed} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--results", help="the Markdown file whose status.py section to rewrite "
                                          "(bench/RESULTS.md)")
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="one short round; exit 1 on a failed request")
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.seconds = 1, 0.5
    programs = programs_in(args.build)
    load = os.getloadavg()[0]
    started = time.monotonic()
    rounds = []
    for n in range(args.repeat):
        order = ROWS if n % 2 == 0 else tuple(reversed(ROWS))
        rounds.append({key: run_row(key, programs, args.seconds) for key in order})
    elapsed = time.monotonic() - started

    ratios = [r["both"]["jobs"]["rate"] / r["jobs"]["jobs"]["rate"] for r in rounds
              if r["jobs"]["jobs"]["rate"]]
    ratio = statistics.median(ratios) if ratios else 0.0
    alone = [r["status"]["status"] for r in rounds]
    lines = [f"{args.repeat} round(s) of {args.seconds:g} s, a fresh server per row, rows "
             f"interleaved (reversed every other round), load average {load:.2f} at the start; "
             f"{SIZE}-byte jobs, a new connection per job and per status request; median of the "
             f"rounds (min–max); {elapsed:.0f} s in all. Status p99 in (b) is measured from "
             f"each request's due time; late: started more than 1 ms after it.", ""]
    lines += table(rounds) + [""]
    lines.append(f"- jobs with status at {STATUS_RATE:,}/s >= {TARGET_RATIO}x jobs alone: "
                 f"{'MET' if ratio >= TARGET_RATIO else 'NOT MET'} ({ratio:.2f}x, the median of "
                 f"the rounds' ratios; {min(ratios):.2f}–{max(ratios):.2f})" if ratios else
                 "- jobs alone: none acknowledged, no ratio")
    lines.append(f"- status requests alone at c={CLIENTS}: "
                 f"{spread([s['rate'] for s in alone], ',.0f')} a second, "
                 f"p50 {spread([s['p50'] for s in alone], '.2f')} ms, "
                 f"p99 {spread([s['p99'] for s in alone], '.2f')} ms")
    print("\n".join(lines))
    if args.results:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        sections.write(args.results, "status.py",
                       "## Status requests beside job submissions: `--status`\n\n"
                       f"Generated by `python3 bench/status.py` on {when}. " + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "ratios": ratios}, f, indent=2)
    failed = [(key, part["errors"], part.get("first_error", ""))
              for r in rounds for key in ROWS for part in r[key].values() if part["errors"]]
    if failed:
        for key, errors, first in failed:
            print(f"status.py: {key}: {errors} failed requests {first}".rstrip(), file=sys.stderr)
        if args.smoke:
            sys.exit(1)


if __name__ == "__main__":
    main()
