#!/usr/bin/env python3
"""The cost of a program per request: sockecho-server --exec against tcpserver and socat.

    cmake -B build && cmake --build build -j2 && python3 bench/exec.py

Part 1: 6-byte requests answered by /bin/cat, at concurrency 1 and 16, with sockecho-bench
(--prefix '', so every reply is checked to be the request), against each server a user would
otherwise reach for: `sockecho-server --exec cat`, `tcpserver -HRl0 -c 200 ... cat` (Debian's
ucspi-tcp) and `socat TCP-LISTEN:...,fork EXEC:cat`. Servers are interleaved within each of
--repeat rounds; requests/s is the median of the rounds, and server CPU per request counts the
server and every process it started (utime + stime + cutime + cstime from /proc/PID/stat).
Servers whose program is missing are left out and said so.

Part 2: `sockecho-server --background --jobs 4 --queue 64 --exec sleep 1` under 16 clients
(`sockecho-bench -c 16 --any-reply`) that submit as fast as they are answered: the queue fills
within the first second, so almost every answer is `busy`; reports the latency p50/p99 of all
answers (accepted and busy) and their counts. Target: p99 under 5 ms.

--smoke runs each part once for half a second and fails (exit 1) on any failed request or a
missing answer, not on speed: CI's check that the benchmark still works.

Loopback only, bounded by --seconds per run; everything it starts is stopped on the way out.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import sections
from common import free_port, wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15])  # utime stime cutime cstime


class Server:
    def __init__(self, key, argv, ready_line):
        self.key = key
        self.argv = argv
        self.process = None
        self.port = None
        self.ready_line = ready_line

    def start(self, port_arg):
        argv = [a.replace("{port}", str(port_arg)) for a in self.argv]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        if self.ready_line:
            line = self.process.stdout.readline()
            self.port = int(line.rsplit(":", 1)[1])
        else:
            self.port = port_arg
            wait_listening(self.port, self.process)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def bench(build, port, concurrency, seconds):
    argv = [os.path.join(build, "tools", "sockecho-bench"), "--port", str(port), "-c",
            str(concurrency), "--size", "6", "--prefix", "", "--duration", str(seconds), "--json",
            "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    return json.loads(done.stdout)


def paired(mine, others):
    """Each round's sockecho requests/s over the best other server's in the same round: servers
    run one after another within a round, so a ratio per round cancels most of the machine's
    drift between rounds. Empty without another server."""
    if not others:
        return []
    return [m / max(o[i] for o in others) for i, m in enumerate(mine)]


def spread(rounds):
    """ "median (min-max)" of per-round ratios, or "" when there are none."""
    if not rounds:
        return ""
    return f"{statistics.median(rounds):.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"


def part_one(args):
    sockecho = os.path.join(args.build, "tools", "sockecho-server")
    servers = [Server("sockecho", [sockecho, "--port", "0", "--quiet", "--exec", "cat"], True)]
    if shutil.which("tcpserver"):
        servers.append(Server("tcpserver", ["tcpserver", "-HRl0", "-c", "200", "127.0.0.1",
                                            "{port}", "cat"], False))
    else:
        print("tcpserver not found (apt-get install ucspi-tcp): left out")
    if shutil.which("socat"):
        servers.append(Server("socat", ["socat", "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,"
                                        "fork,backlog=1024", "EXEC:cat"], False))
    else:
        print("socat not found (apt-get install socat): left out")
    results = {}
    try:
        for s in servers:
            s.start(0 if s.ready_line else free_port())
        for concurrency in (1, 16):
            rows = {s.key: {"rps": [], "ticks": 0, "requests": 0, "errors": 0} for s in servers}
            for _ in range(args.repeat):
                for s in servers:
                    before = cpu_ticks(s.process.pid)
                    r = bench(args.build, s.port, concurrency, args.seconds)
                    rows[s.key]["ticks"] += cpu_ticks(s.process.pid) - before
                    rows[s.key]["rps"].append(r["requests_per_s"])
                    rows[s.key]["requests"] += r["ok"]
                    rows[s.key]["errors"] += r["errors"]
            results[concurrency] = {
                k: {"rps": statistics.median(v["rps"]),
                    "cpu_us": v["ticks"] / TICKS * 1e6 / v["requests"] if v["requests"] else 0,
                    "errors": v["errors"],
                    "rounds": paired(v["rps"], [o["rps"] for ok, o in rows.items()
                                                if ok != "sockecho"]) if k == "sockecho" else []}
                for k, v in rows.items()}
    finally:
        for s in servers:
            s.stop()
    print(f"\n6-byte requests through cat, medians of {args.repeat} runs of {args.seconds} s")
    print(f"{'server':<12}{'c':>4}{'req/s':>10}{'x best other':>14}{'per round':>20}"
          f"{'CPU us/req':>12}{'errors':>8}")
    for concurrency, row in results.items():
        others = [v["rps"] for k, v in row.items() if k != "sockecho"]
        best = max(others) if others else 0
        for key, v in row.items():
            ratio = f"{v['rps'] / best:.2f}x" if key == "sockecho" and best else ""
            print(f"{key:<12}{concurrency:>4}{v['rps']:>10,.0f}{ratio:>14}"
                  f"{spread(v['rounds']):>20}{v['cpu_us']:>12,.0f}{v['errors']:>8}")
    return results


def part_two(args):
    sockecho = os.path.join(args.build, "tools", "sockecho-server")
    server = Server("background", [sockecho, "--port", "0", "--quiet", "--background", "--jobs",
                                   "4", "--queue", "64", "--exec-timeout", "3", "--exec",
                                   "sleep", "1"], True)
    argv = [os.path.join(args.build, "tools", "sockecho-bench"), "-c", "16", "--size", "6",
            "--any-reply", "--duration", str(args.seconds), "--json", "--quiet"]
    try:
        server.start(0)
        done = subprocess.run(argv + ["--port", str(server.port)], capture_output=True,
                              text=True, timeout=args.seconds + 120)
        r = json.loads(done.stdout)
    finally:
        # Its queue holds up to 64 one-second jobs: a second signal ends it without the drain
        # (signals sent at once may merge into one, so they are repeated until it has gone).
        for _ in range(40):
            if not server.process or server.process.poll() is not None:
                break
            server.process.terminate()
            try:
                server.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        server.stop()
    answers = r["replies"]
    accepted, busy = answers.get("accepted", 0), answers.get("busy", 0)
    other = r["ok"] - accepted - busy
    print(f"\n--background, 16 clients (sockecho-bench -c 16 --any-reply) for {args.seconds} s "
          f"against --jobs 4 --queue 64 --exec sleep 1: {accepted} accepted, {busy} busy, "
          f"{other} other, {r['errors']} errors")
    p99 = float(r["p99_ms"])
    print(f"answer latency p50 {float(r['p50_ms']):.3f} ms, p99 {p99:.3f} ms "
          f"({'met' if p99 < 5 else 'MISSED'}: target p99 < 5 ms)")
    return {"accepted": accepted, "busy": busy, "other": other, "errors": r["errors"],
            "requests_per_s": r["requests_per_s"], "p50_ms": float(r["p50_ms"]), "p99_ms": p99}


def markdown(args, out, load, elapsed):
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## A program per request: `--exec` and `--background`",
        "",
        f"Generated by `python3 bench/exec.py` on {when}, load average {load:.2f} at the start, "
        f"{args.repeat} runs of {args.seconds:g} s per server and concurrency, servers "
        f"interleaved; {elapsed:.0f} s in all. 6-byte requests answered by `cat`; requests/s "
        "is the median of the runs; CPU is the server's and its children's user + system time "
        "per request. x best other: sockecho's requests/s over the faster of tcpserver and socat "
        "(target: at least 1.00x); per round: the same ratio taken within each round, its median "
        "and range, which shows how much of a difference is the machine's drift.",
        "",
        "| server | concurrency | requests/s | x best other | per round | CPU us/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {"sockecho": "sockecho-server --exec cat", "tcpserver": "tcpserver -HRl0 ... cat",
             "socat": "socat TCP-LISTEN:...,fork EXEC:cat"}
    for concurrency, row in out["exec"].items():
        others = [v["rps"] for k, v in row.items() if k != "sockecho"]
        best = max(others) if others else 0
        for key, v in row.items():
            ratio = f"{v['rps'] / best:.2f}x" if key == "sockecho" and best else ""
            lines.append(f"| {names.get(key, key)} | {concurrency} | {v['rps']:,.0f} | {ratio} | "
                         f"{spread(v.get('rounds', []))} | {v['cpu_us']:,.0f} | {v['errors']} |")
    b = out["background"]
    lines += [
        "",
        f"`--background --jobs 4 --queue 64 --exec sleep 1` under `sockecho-bench -c 16 "
        f"--any-reply` for {args.seconds:g} s, the queue full after the first moments: "
        f"{b['accepted']:,} accepted, {b['busy']:,} busy, {b['other']} other, {b['errors']} "
        f"errors, {b['requests_per_s']:,.0f} answers/s; answer latency p50 {b['p50_ms']:.3f} ms, "
        f"p99 {b['p99_ms']:.3f} ms (target: p99 under 5 ms: "
        f"{'met' if b['p99_ms'] < 5 else 'missed'}).",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--results", help="the Markdown file whose exec.py section to rewrite "
                        "(default bench/RESULTS.md; with --smoke, none unless given)")
    parser.add_argument("--smoke", action="store_true",
                        help="one short round of each part; exit 1 on errors (for CI)")
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.seconds = 1, 0.5
    for program in ("sockecho-server", "sockecho-bench"):
        if not os.access(os.path.join(args.build, "tools", program), os.X_OK):
            sys.exit(f"exec.py: {program} is missing; build first")
    if args.results is None and not args.smoke:
        args.results = os.path.join(ROOT, "bench", "RESULTS.md")
    started = time.monotonic()
    load = os.getloadavg()[0]
    out = {"exec": part_one(args), "background": part_two(args)}
    elapsed = time.monotonic() - started
    print(f"\nexec.py: {elapsed:.0f} s")
    if args.results:
        sections.write(args.results, "exec.py", markdown(args, out, load, elapsed))
        print(f"exec.py: wrote its section of {os.path.relpath(args.results)}")
    failed = [f"{k} c={c}: {v['errors']} errors" for c, row in out["exec"].items()
              for k, v in row.items() if v["errors"]]
    if out["background"]["errors"] or out["background"]["other"]:
        failed.append(f"background: {out['background']['errors']} errors, "
                      f"{out['background']['other']} other answers")
    if out["background"]["accepted"] == 0:
        failed.append("background: no job accepted")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if failed:
        sys.exit("exec.py: " + "; ".join(failed))


if __name__ == "__main__":
    main()
