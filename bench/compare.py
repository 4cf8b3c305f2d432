#!/usr/bin/env python3
"""Side-by-side comparison of sockecho-server with the servers a user would otherwise run.

Starts every server on a free loopback port, then runs the same scenarios against each with
sockecho-bench, interleaving the servers within each repetition so that a machine getting busier
or quieter during the run affects them alike. Writes a Markdown table to bench/RESULTS.md and a
chart (SVG, with gnuplot) to bench/results.svg.

    cmake -B build && cmake --build build -j2 && python3 bench/compare.py

Servers: sockecho-server (--workers 1, and its defaults: up to 128 workers started on demand;
logging on, to a file), the floor (bench/floor.c: a bare C accept loop, serial and with 16
threads in accept), Python's socketserver.TCPServer and ThreadingTCPServer (bench/py_server.py),
and the document's PHP server (tests/php/server.php) when php is installed. Over a Unix socket
(6 B scenarios): the floor on AF_UNIX and sockecho-server --unix. Over UDP: the UDP floor
(bench/floor_udp.c, whose "load" mode is also the closed-loop load, one datagram in flight per
socket) and sockecho-server --udp; and what comes back of one 65,507-byte datagram from
sockecho, Python's socketserver.UDPServer (bench/py_udp_server.py) and socat.

Measured per server and scenario: requests/s and MB/s (medians of the repetitions), latency p50
and p99 (medians of the repetitions' percentiles), server CPU time per request (user + system
from /proc/PID/stat over all repetitions, divided by the requests served) and peak RSS (VmHWM,
reset before each scenario). Ratios are to the floor of the same kind and transport: serial
servers to the serial floor, concurrent ones to the pooled floor; over a Unix socket also to the
same sockecho over TCP.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import common
import sections
from common import OUT_DIR, ROOT, TICKS

BENCH_DIR = os.path.join(ROOT, "bench")
POOL = 16
MIB = 1 << 20
BIG = 65507  # the largest UDP payload over IPv4


@dataclass
class Scenario:
    key: str
    title: str
    size: int
    concurrency: int  # connections, or UDP sockets, with one request in flight each
    large: bool
    transports: tuple = ("tcp",)  # the servers it runs: those of these transports


SCENARIOS = [
    Scenario("small-c1", "6 B, concurrency 1", 6, 1, False, ("tcp", "unix")),
    Scenario("small-c16", "6 B, concurrency 16", 6, 16, False, ("tcp", "unix")),
    Scenario("large-c1", "16 MiB, concurrency 1", 16 * MIB, 1, True),
    Scenario("large-c4", "16 MiB, concurrency 4", 16 * MIB, 4, True),
    Scenario("udp-1", "UDP, 6 B datagrams, 1 socket", 6, 1, False, ("udp",)),
    Scenario("udp-16", "UDP, 6 B datagrams, 16 sockets", 6, 16, False, ("udp",)),
]
STREAM = [sc for sc in SCENARIOS if "udp" not in sc.transports]


@dataclass
class ServerSpec:
    key: str
    title: str
    argv: list
    pooled: bool  # serves connections concurrently
    floor: str  # key of the floor it is compared with
    transport: str = "tcp"  # "tcp", "unix" (a socket path in argv) or "udp"
    tcp: str = ""  # over a Unix socket: the key of the same server over TCP


@dataclass
class Runs:
    rps: list = field(default_factory=list)
    mbps: list = field(default_factory=list)
    p50: list = field(default_factory=list)
    p99: list = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    first_error: str = ""
    cpu_ticks: int = 0
    peak_kib: int = 0


class Server(common.Server):
    """common.Server with the spec it runs: the title names it in messages, and path is its
    socket's path when it listens on a Unix socket ("" otherwise)."""

    def __init__(self, spec, log_path):
        self.spec = spec
        super().__init__(spec.argv, log_path, spec.title)
        self.path = self.unix_path or ""


def build_floor(name="floor"):
    os.makedirs(OUT_DIR, exist_ok=True)
    binary = os.path.join(OUT_DIR, name)
    source = os.path.join(BENCH_DIR, f"{name}.c")
    if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(source):
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-pthread", "-o", binary, source], check=True)
    return binary


def server_specs(build, php, sockets):
    """Every server; `sockets` is the directory for the Unix sockets."""
    sockecho = os.path.join(build, "tools", "sockecho-server")
    floor = build_floor()
    floor_udp = build_floor("floor_udp")
    py = os.path.join(BENCH_DIR, "py_server.py")
    specs = [
        ServerSpec("floor-1", "floor (C, serial)", [floor, "127.0.0.1", "0", "1"], False, "floor-1"),
        ServerSpec("floor-16", f"floor (C, {POOL} threads)", [floor, "127.0.0.1", "0", str(POOL)],
                   True, "floor-16"),
        ServerSpec("sockecho-1", "sockecho-server --workers 1",
                   [sockecho, "--port", "0", "--workers", "1"], False, "floor-1"),
        ServerSpec("sockecho", "sockecho-server (default: up to 128 workers, on demand)",
                   [sockecho, "--port", "0"], True, "floor-16"),
        ServerSpec("py-plain", "Python TCPServer", [sys.executable, py, "127.0.0.1", "0", "plain"],
                   False, "floor-1"),
        ServerSpec("py-threading", "Python ThreadingTCPServer",
                   [sys.executable, py, "127.0.0.1", "0", "threading"], True, "floor-16"),
    ]
    if php:
        specs.append(ServerSpec("php", "PHP (the document's server)",
                                [php, os.path.join(ROOT, "tests", "php", "server.php"),
                                 "127.0.0.1", "0"], False, "floor-1"))
    unix = lambda key: os.path.join(sockets, f"{key}.sock")  # noqa: E731
    specs += [
        ServerSpec("floor-unix-1", "floor (C, serial), Unix socket",
                   [floor, "unix:" + unix("floor-unix-1"), "1"], False, "floor-unix-1", "unix"),
        ServerSpec("floor-unix-16", f"floor (C, {POOL} threads), Unix socket",
                   [floor, "unix:" + unix("floor-unix-16"), str(POOL)], True, "floor-unix-16",
                   "unix"),
        ServerSpec("sockecho-unix-1", "sockecho-server --workers 1 --unix",
                   [sockecho, "--unix", unix("sockecho-unix-1"), "--workers", "1"], False,
                   "floor-unix-1", "unix", "sockecho-1"),
        ServerSpec("sockecho-unix", "sockecho-server --unix (default workers)",
                   [sockecho, "--unix", unix("sockecho-unix")], True, "floor-unix-16", "unix",
                   "sockecho"),
        ServerSpec("floor-udp", "floor (C, UDP: recvfrom/sendmsg)",
                   [floor_udp, "serve", "127.0.0.1", "0"], False, "floor-udp", "udp"),
        ServerSpec("sockecho-udp", "sockecho-server --udp", [sockecho, "--udp", "--port", "0"]
                   + unthrottled(sockecho), False, "floor-udp", "udp"),
    ]
    return specs


class Load:
    """The load of a scenario against one server, in sockecho-bench's JSON terms: sockecho-bench
    over TCP and Unix sockets, floor_udp's closed loop over UDP (its lost datagrams as errors;
    it measures no latency)."""

    def __init__(self, build):
        self.bench = os.path.join(build, "tools", "sockecho-bench")
        self.floor_udp = build_floor("floor_udp")

    def run(self, server, scenario, seconds):
        if server.spec.transport == "udp":
            return self._udp(server.port, scenario, seconds)
        target = ["--unix", server.path] if server.path else ["--port", str(server.port)]
        argv = [self.bench] + target + ["-c", str(scenario.concurrency), "--size",
                                        str(scenario.size), "--duration", f"{seconds:.3f}",
                                        "--json", "--quiet"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode not in (0, 1) or not done.stdout.strip():
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def _udp(self, port, scenario, seconds):
        argv = [self.floor_udp, "load", "127.0.0.1", str(port), str(scenario.concurrency),
                f"{seconds:.3f}", str(scenario.size)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                              check=True)
        fields = dict(word.split("=") for word in done.stdout.split())
        rate = float(fields["per_second"])
        return {"requests_per_s": rate, "mb_per_s": rate * scenario.size / 1e6,
                "p50_ms": float("nan"), "p99_ms": float("nan"), "ok": int(fields["datagrams"]),
                "errors": int(fields["lost"]), "first_error": ""}


def big_reply(port, prefix_len, tries):
    """The payload bytes of the reply to one 65,507-byte datagram, or None. Unconnected, since
    socat's forked child answers from a port of its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        for _ in range(tries):
            s.sendto(b"x" * BIG, ("127.0.0.1", port))
            try:
                reply, _ = s.recvfrom(BIG + 1024)
            except socket.timeout:
                continue
            return len(reply) - prefix_len
    return None


def unthrottled(server):
    """The flags that switch a sockecho-server's per-source UDP budget off, so that the load of
    one socket on loopback compares like for like with servers that have none: --udp-rate 0,
    and --udp-rate-bytes 0 where the binary has it (an older one given with --against may not,
    and had no budget on loopback anyway)."""
    flags = ["--udp-rate", "0"]
    shown = subprocess.run([server, "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--udp-rate-bytes" in shown:
        flags += ["--udp-rate-bytes", "0"]
    return flags


def whole_datagrams(build):
    """[title, payload bytes back] for a 65,507-byte datagram sent to each UDP echo."""
    sockecho = os.path.join(build, "tools", "sockecho-server")
    py = os.path.join(BENCH_DIR, "py_udp_server.py")
    out = []
    for key, title, argv, prefix_len in (
            ("whole-sockecho", "sockecho-server --udp --prefix ''",
             [sockecho, "--udp", "--port", "0", "--prefix", ""] + unthrottled(sockecho), 0),
            ("whole-python", "Python socketserver.UDPServer",
             [sys.executable, py, "127.0.0.1", "0"], len("数据是 ".encode()))):
        server = Server(ServerSpec(key, title, argv, False, "", "udp"),
                        os.path.join(OUT_DIR, f"{key}.log"))
        try:
            out.append([title, big_reply(server.port, prefix_len, 1)])
        finally:
            server.stop()
    if not shutil.which("socat"):
        print("compare.py: socat not found (apt-get install socat); left out of the UDP rows",
              file=sys.stderr)
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # socat prints no ready line: a datagram that beats its bind is lost, so ask again.
    proc = subprocess.Popen(["socat", "-T1", f"UDP-RECVFROM:{port},bind=127.0.0.1,fork",
                             "EXEC:cat"], stderr=subprocess.DEVNULL)
    try:
        out.append(["socat -T1 UDP-RECVFROM:PORT,fork EXEC:cat", big_reply(port, 0, 5)])
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def ratio(value, base):
    return value / base if base else float("nan")


def fmt(value, digits=0):
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def cpu_us(runs):
    return runs.cpu_ticks / TICKS * 1e6 / runs.requests if runs.requests else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"),
                        help="CMake build directory with sockecho-server and sockecho-bench")
    parser.add_argument("--repeat", type=int, default=9, help="runs per server and scenario")
    parser.add_argument("--seconds", type=float, default=0.4,
                        help="length of each run of 6-byte requests")
    parser.add_argument("--large-seconds", type=float, default=1.0,
                        help="length of each run of 16 MiB requests (a few dozen requests each)")
    parser.add_argument("--only", default="", help="comma-separated server keys to run")
    parser.add_argument("--against", default="",
                        help="another build directory whose sockecho-server runs too, over TCP "
                             "and UDP (before/after)")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario keys to run")
    parser.add_argument("--redraw", action="store_true",
                        help="rewrite RESULTS.md and the chart from the last run's raw numbers")
    parser.add_argument("--results", default=os.path.join(BENCH_DIR, "RESULTS.md"))
    parser.add_argument("--chart", default=os.path.join(BENCH_DIR, "results.svg"))
    args = parser.parse_args()

    raw = os.path.join(OUT_DIR, "raw.json")
    if args.redraw:
        with open(raw) as f:
            saved = json.load(f)
        specs = [ServerSpec(**s) for s in saved["specs"]]
        results = {sc: {k: Runs(**r) for k, r in runs.items()}
                   for sc, runs in saved["results"].items()}
        args.repeat, args.seconds = saved["repeat"], saved["seconds"]
        args.large_seconds = saved.get("large_seconds", args.seconds)
        write_results(args, specs, results, saved.get("whole", []), saved["elapsed"],
                      saved["load"], saved["when"])
        write_chart(args, specs, results)
        return

    for program in (os.path.join(args.build, "tools", name)
                    for name in ("sockecho-bench", "sockecho-server")):
        if not os.access(program, os.X_OK):
            sys.exit(f"compare.py: {program} is missing; build first: "
                     "cmake -B build && cmake --build build -j2")
    php = shutil.which("php")
    if not php:
        print("compare.py: php not found (apt-get install php-cli); the PHP server is left out",
              file=sys.stderr)
    sockets = tempfile.mkdtemp(prefix="sockecho-compare-")
    specs = server_specs(args.build, php, sockets)
    load = Load(args.build)
    if args.against:
        other = os.path.join(args.against, "tools", "sockecho-server")
        for workers, floor in (("1", "floor-1"), ("", "floor-16")):
            flags = ["--workers", workers] if workers else []
            specs.append(ServerSpec(f"against-{workers or 'default'}",
                                    " ".join([other] + (flags or ["(default)"])),
                                    [other, "--port", "0"] + flags, workers != "1", floor))
        specs.append(ServerSpec("against-udp", f"{other} --udp",
                                [other, "--udp", "--port", "0"] + unthrottled(other), False,
                                "floor-udp", "udp"))
    if args.only:
        wanted = set(args.only.split(","))
        specs = [s for s in specs
                 if s.key in wanted or s.key.startswith(("floor", "against"))]

    started = time.monotonic()
    load_before = os.getloadavg()
    servers = []
    whole = []
    try:
        for spec in specs:
            servers.append(Server(spec, os.path.join(OUT_DIR, f"{spec.key}.log")))
        results = {}
        for scenario in SCENARIOS:
            if args.scenarios and scenario.key not in args.scenarios.split(","):
                continue
            active = [s for s in servers if s.spec.transport in scenario.transports]
            print(f"== {scenario.title}", file=sys.stderr, flush=True)
            for server in active:
                # Warm up: first connections, thread start-up, buffers grown once.
                load.run(server, scenario, 0.15)
                server.reset_peak()
            runs = {server.spec.key: Runs() for server in active}
            for _ in range(args.repeat):
                for server in active:
                    r = runs[server.spec.key]
                    before = server.cpu_ticks()
                    out = load.run(server, scenario,
                                   args.large_seconds if scenario.large else args.seconds)
                    r.cpu_ticks += server.cpu_ticks() - before
                    r.rps.append(out["requests_per_s"])
                    r.mbps.append(out["mb_per_s"])
                    r.p50.append(out["p50_ms"])
                    r.p99.append(out["p99_ms"])
                    r.requests += out["ok"]
                    r.errors += out["errors"]
                    r.first_error = r.first_error or out["first_error"]
            for server in active:
                r = runs[server.spec.key]
                r.peak_kib = server.peak_kib()
                print(f"   {server.spec.title:34} {statistics.median(r.rps):10.0f} req/s "
                      f"{statistics.median(r.mbps):9.1f} MB/s  cpu {cpu_us(r):7.1f} us/req  "
                      f"peak {r.peak_kib / 1024:6.1f} MiB  errors {r.errors}",
                      file=sys.stderr, flush=True)
            results[scenario.key] = runs
        if not args.only and not args.scenarios:
            print(f"== UDP, one {BIG:,}-byte datagram", file=sys.stderr, flush=True)
            whole = whole_datagrams(args.build)
            for title, got in whole:
                print(f"   {title:34} {got} bytes back", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(sockets, ignore_errors=True)
    elapsed = time.monotonic() - started

    if args.only or args.scenarios:
        print("compare.py: a partial run; RESULTS.md and the chart are left as they are",
              file=sys.stderr)
        return
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(raw, "w") as f:
        json.dump({"specs": [vars(s) for s in specs],
                   "results": {sc: {k: vars(r) for k, r in runs.items()}
                               for sc, runs in results.items()},
                   "repeat": args.repeat, "seconds": args.seconds,
                   "large_seconds": args.large_seconds, "whole": whole, "elapsed": elapsed,
                   "load": list(load_before), "when": when}, f)
    write_results(args, specs, results, whole, elapsed, load_before, when)
    write_chart(args, specs, results)
    print(f"compare.py: {elapsed:.0f} s; wrote {os.path.relpath(args.results)}", file=sys.stderr)


def spread(values):
    """Interquartile range over median: how much the runs of one cell disagree."""
    if len(values) < 4:
        return float("nan")
    q = statistics.quantiles(values, n=4)
    med = statistics.median(values)
    return (q[2] - q[0]) / med if med else float("nan")


def summarize(runs):
    return {
        "spread": spread(runs.mbps if runs.mbps and runs.mbps[0] > 100 else runs.rps),
        "rps": statistics.median(runs.rps),
        "mbps": statistics.median(runs.mbps),
        "p50": statistics.median(runs.p50),
        "p99": statistics.median(runs.p99),
        "cpu": cpu_us(runs),
        "rss": runs.peak_kib / 1024,
        "errors": runs.errors,
    }


def targets(specs, results, whole):
    """The issues' targets, each as (text, met, detail)."""
    keys = {s.key for s in specs}
    out = []
    s = {sc: {k: summarize(v) for k, v in results[sc].items()} for sc in results}
    for sc in ("small-c1", "small-c16"):
        for mine, floor in (("sockecho-1", "floor-1"), ("sockecho", "floor-16")):
            r = ratio(s[sc][mine]["rps"], s[sc][floor]["rps"])
            out.append((f"{sc}: {mine} requests/s >= 0.95x {floor}", r >= 0.95, f"{r:.2f}x"))
            c = ratio(s[sc][mine]["cpu"], s[sc][floor]["cpu"])
            out.append((f"{sc}: {mine} CPU/request <= 1.1x {floor}", c <= 1.1, f"{c:.2f}x"))
    for sc in ("large-c1", "large-c4"):
        for mine, floor in (("sockecho-1", "floor-1"), ("sockecho", "floor-16")):
            r = ratio(s[sc][mine]["mbps"], s[sc][floor]["mbps"])
            out.append((f"{sc}: {mine} MB/s >= 0.95x {floor}", r >= 0.95, f"{r:.2f}x"))
    for other in ("py-threading", "php"):
        if other not in keys:
            continue
        for sc in (x.key for x in STREAM):
            metric = "mbps" if sc.startswith("large") else "rps"
            need = 2.0 if sc.startswith("large") else 1.0
            best = max(s[sc]["sockecho-1"][metric], s[sc]["sockecho"][metric])
            r = ratio(best, s[sc][other][metric])
            out.append((f"{sc}: sockecho >= {need:g}x {other}", r >= need, f"{r:.2f}x"))
    for sc in ("large-c1", "large-c4"):
        conc = next(x.concurrency for x in SCENARIOS if x.key == sc)
        limit = 16 * conc + 4
        for mine in ("sockecho-1", "sockecho"):
            rss = s[sc][mine]["rss"]
            out.append((f"{sc}: {mine} peak RSS <= {limit} MiB", rss <= limit, f"{rss:.1f} MiB"))
    for sc in ("large-c1", "large-c4"):
        for mine, floor in (("sockecho-1", "floor-1"), ("sockecho", "floor-16")):
            r = ratio(s[sc][mine]["mbps"], s[sc][floor]["mbps"])
            out.append((f"stretch, {sc}: {mine} MB/s > {floor}", r > 1.0, f"{r:.2f}x"))
    for sc in ("small-c1", "small-c16"):
        for spec in specs:
            if spec.transport != "unix" or not spec.tcp:
                continue
            mine = s[sc][spec.key]["rps"]
            r = ratio(mine, s[sc][spec.floor]["rps"])
            out.append((f"{sc}: {spec.key} requests/s >= 0.95x {spec.floor}", r >= 0.95,
                        f"{r:.2f}x"))
            r = ratio(mine, s[sc][spec.tcp]["rps"])
            out.append((f"{sc}: {spec.key} requests/s >= 1.5x {spec.tcp} (the same over TCP)",
                        r >= 1.5, f"{r:.2f}x"))
    for sc in ("udp-1", "udp-16"):
        r = ratio(s[sc]["sockecho-udp"]["rps"], s[sc]["floor-udp"]["rps"])
        out.append((f"{sc}: sockecho-udp datagrams/s >= 0.95x floor-udp", r >= 0.95, f"{r:.2f}x"))
    if whole:
        got = dict(whole)
        mine = got.get("sockecho-server --udp --prefix ''")
        others = "; ".join(f"{title}: {n}" for title, n in whole[1:])
        out.append((f"UDP: a {BIG:,}-byte datagram comes back whole from sockecho", mine == BIG,
                    f"{mine} bytes ({others})"))
    return out


def write_results(args, specs, results, whole, elapsed, load_before, when):
    lines = ["# sockecho compared", ""]
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines += [
        f"Generated by `python3 bench/compare.py` on {when}: "
        f"Linux {platform.release()}, {os.cpu_count()} x {cpu}, load average "
        f"{load_before[0]:.2f} at the start; {args.repeat} runs per server and scenario "
        f"({args.seconds:g} s each for 6 B, {args.large_seconds:g} s for 16 MiB), servers "
        f"interleaved within each run; {elapsed:.0f} s in all. Client and "
        f"server share the machine's cores.",
        "",
        "requests/s and MB/s are medians of the runs (MB/s: request bytes echoed per second, "
        "10^6 bytes); p50/p99 are medians of each run's percentiles; CPU is the server's "
        "user + system time per request (from `/proc/PID/stat`, summed over all runs); peak RSS is "
        "VmHWM, reset before each scenario. spread: interquartile range of the runs' "
        "throughput over its median, the noise to read every ratio against. "
        "x floor: ratio to the floor of the same kind "
        "(serial servers to the serial floor, concurrent ones to the pooled floor, each over its "
        "own transport: TCP, Unix socket or UDP); for CPU and RSS lower is better. Over UDP "
        "the load is `floor_udp load` (one 6-byte datagram in flight per socket, the next sent "
        "when its reply is back), which measures no latency; its errors are datagrams lost.",
        "",
    ]
    floor_of = {s.key: s.floor for s in specs}
    lines += ["## Summary", "",
              "Throughput (requests/s for 6 B, MB/s for 16 MiB) and, in brackets, the ratio to "
              "the floor of the same kind and transport; over a Unix socket, after it, the "
              "ratio to the same server over TCP. Over a Unix socket only the 6 B scenarios run; "
              "UDP has tables of its own below.", "",
              "| server | " + " | ".join(sc.title for sc in STREAM) + " |",
              "| --- |" + " ---: |" * len(STREAM)]
    for spec in specs:
        if spec.transport == "udp":
            continue
        cells = []
        for scenario in STREAM:
            summary = {k: summarize(v) for k, v in results[scenario.key].items()}
            if spec.key not in summary:
                cells.append("-")
                continue
            metric = "mbps" if scenario.large else "rps"
            value = summary[spec.key][metric]
            base = summary[floor_of[spec.key]][metric]
            cell = f"{fmt(value)} ({fmt(ratio(value, base), 2)}x"
            if spec.tcp:
                cell += f", {fmt(ratio(value, summary[spec.tcp][metric]), 2)}x TCP"
            cells.append(cell + ")")
        lines.append(f"| {spec.title} | " + " | ".join(cells) + " |")
    lines.append("")
    for scenario in SCENARIOS:
        runs = results[scenario.key]
        summary = {k: summarize(v) for k, v in runs.items()}
        lines += [f"## {scenario.title}", "",
                  "| server | requests/s | x floor | MB/s | x floor | spread | p50 ms | p99 ms "
                  "| CPU us/req | x floor | peak RSS MiB | x floor | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: | ---: |"]
        for spec in (spec for spec in specs if spec.key in summary):
            m = summary[spec.key]
            f = summary[floor_of[spec.key]]
            lines.append(
                f"| {spec.title} | {fmt(m['rps'])} | {fmt(ratio(m['rps'], f['rps']), 2)} "
                f"| {fmt(m['mbps'], 1 if scenario.large else 3)} "
                f"| {fmt(ratio(m['mbps'], f['mbps']), 2)} | {fmt(100 * m['spread'])}% "
                f"| {fmt(m['p50'], 3)} | {fmt(m['p99'], 3)} "
                f"| {fmt(m['cpu'], 1)} | {fmt(ratio(m['cpu'], f['cpu']), 2)} "
                f"| {fmt(m['rss'], 1)} | {fmt(ratio(m['rss'], f['rss']), 2)} | {m['errors']} |")
        lines.append("")
    if whole:
        lines += [f"## UDP, one {BIG:,}-byte datagram", "",
                  "The largest IPv4 UDP payload, sent once to each server; what came back of it "
                  "(payload bytes, the prefix not counted; None: no reply within 1 s).", "",
                  "| server | bytes back | whole? |", "| --- | ---: | --- |"]
        lines += [f"| {title} | {fmt(got) if got is not None else 'None'} | "
                  f"{'yes' if got == BIG else '**no**'} |" for title, got in whole]
        lines.append("")
    lines += ["## Targets", "", "| target | met | measured |", "| --- | --- | ---: |"]
    for text, met, detail in targets(specs, results, whole):
        lines.append(f"| {text} | {'yes' if met else '**no**'} | {detail} |")
    lines.append("")
    lines += [
        "## Notes", "",
        "- Python's `TCPServer` and the document's PHP server listen with backlogs of 5 and 4 "
        "(socketserver's `request_queue_size`, the post's `socket_listen($socket, 4)`). At "
        "concurrency 16 their accept queue overflows: some connections are reset (the errors "
        "column) or wait for a retransmission (p99).",
        "- `ThreadingTCPServer` starts a thread per connection, and many requests then wait for "
        "CPython's GIL switch interval (5 ms): hence its rate and p99 on small requests.",
        "- The floor keeps every thread's request buffer for good: with 16 threads that is 16 "
        "buffers of 16 MiB touched, whatever the concurrency. sockecho keeps a large buffer only "
        "for the next large request (never more than the large requests served at once) and frees "
        "it after a `--timeout` without connections.",
        "- Client and server share the cores: a server that uses less CPU leaves more to the "
        "client, so a throughput ratio and a CPU ratio tell different things. Other work on the "
        "machine shows up as spread between runs; compare ratios within one run.",
        "- UDP is loaded by another client (`floor_udp load`, not sockecho-bench) and a datagram "
        "has no connection to set up or tear down: its rates compare with each other, not with "
        "the TCP or Unix rows.",
        "",
    ]
    chart = os.path.relpath(args.chart, os.path.dirname(os.path.abspath(args.results)))
    lines += [f"![requests/s and MB/s of each server, as a ratio to the floor]({chart})", ""]
    others = sections.kept(args.results)  # exec.py's and the like: not this script's to drop
    with open(args.results, "w") as f:
        f.write("\n".join(lines))
        if others:
            f.write("\n" + others)


def write_chart(args, specs, results):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("compare.py: gnuplot not found (apt-get install gnuplot-nox); chart not drawn",
              file=sys.stderr)
        return
    # One group per scenario, one bar per server: throughput as a ratio to the faster of the two
    # floors, the best the kernel gives this design, so every bar is on the same scale.
    # UDP, measured by another load, is left out; a server a scenario did not run has no bar.
    specs = [s for s in specs if s.transport != "udp"]
    data = os.path.join(OUT_DIR, "chart.dat")
    with open(data, "w") as f:
        f.write("scenario " + " ".join(f'"{s.title}"' for s in specs) + "\n")
        for scenario in STREAM:
            summary = {k: summarize(v) for k, v in results[scenario.key].items()}
            metric = "mbps" if scenario.large else "rps"
            base = max(summary["floor-16"][metric], summary["floor-1"][metric])
            row = [f"{summary[s.key][metric] / base:.4f}" if s.key in summary else "?"
                   for s in specs]
            f.write(f'"{scenario.title}" ' + " ".join(row) + "\n")
    xtics = ", ".join(
        '"{}" {}'.format(sc.title.replace(", concurrency ", ", c = "), i)
        for i, sc in enumerate(STREAM))
    script = f"""
set terminal svg size 1100,480 dynamic enhanced font 'sans,12' background rgb 'white'
set output '{args.chart}'
set title 'Throughput relative to the faster TCP floor (requests/s for 6 B, MB/s for 16 MiB)'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set ylabel 'x floor'
set key outside right top vertical
set offsets 0, 0, 0.1, 0
set xtics nomirror ({xtics})
plot for [i=2:{len(specs) + 1}] '{data}' using i title columnheader(i)
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)


if __name__ == "__main__":
    main()
