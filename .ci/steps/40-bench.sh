#!/usr/bin/env bash
# Benchmark smoke test (well under 2 minutes): sockecho-bench against sockecho-server must get
# every reply right, small and large, and the comparison script must run end to end on a tiny
# budget. Timings are not checked here: a shared CI machine cannot judge speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages python3 ucspi-tcp socat gnuplot-nox  # tcpserver, socat: exec.py; socat: compare.py (UDP); gnuplot: the charts
without_starting_services need_packages beanstalkd  # jobs.py's comparison; its own service stays off

# A build of its own, of only what this step runs (the README's test command builds in build/).
build=build-bench
step "bench: build sockecho-server and sockecho-bench in $build"
cmake -B "$build" -DSOCKECHO_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target sockecho-server sockecho-bench >/dev/null

step "bench: sockecho-bench against sockecho-server"
server_log=$(mktemp)
ready_pid=
trap 'kill "$ready_pid" 2>/dev/null || true; rm -f "$server_log"' EXIT
wait_for_ready_line "$server_log" "./$build/tools/sockecho-server" --port 0 --quiet
port=$ready_port

./$build/tools/sockecho-bench --port "$port" --requests 5000 -c 8
./$build/tools/sockecho-bench --port "$port" --requests 40 -c 4 --size 4M
./$build/tools/sockecho-bench --port "$port" --duration 2 -c 16 --json

kill -TERM "$ready_pid"
wait "$ready_pid"
exec {ready_fd}<&-
trap - EXIT
rm -f "$server_log"

# The comparison, every server and scenario once, briefly, into a scratch directory: it must
# run end to end (TCP, Unix sockets and UDP, and the 65,507-byte datagram to sockecho, Python
# and socat); its numbers mean nothing on a tiny budget.
scratch=$(mktemp -d)
step "bench: bench/compare.py, briefly"
python3 bench/compare.py --build "$build" --repeat 1 --seconds 0.1 --large-seconds 0.1 \
  --results "$scratch/RESULTS.md" --chart "$scratch/results.svg"
grep -q '^## Targets' "$scratch/RESULTS.md"
grep -q '^| sockecho-server --unix (default workers) | [0-9]' "$scratch/RESULTS.md"
grep -q '^| sockecho-server --udp | [0-9]' "$scratch/RESULTS.md"
grep -q '^| socat ' "$scratch/RESULTS.md"
rm -rf "$scratch"

# Hostile clients, the smoke version (seconds): it must run end to end and its servers exit 0.
step "bench: bench/hostile.py --smoke"
python3 bench/hostile.py --build "$build" --smoke

# A program per request and background jobs, the smoke version (seconds): every reply right, a
# job accepted, and every server it starts stopped.
step "bench: bench/exec.py --smoke"
python3 bench/exec.py --build "$build" --smoke

# Acknowledged jobs, the smoke version (seconds): sockecho in memory (and with --spool where it
# exists) and beanstalkd, every submission acknowledged, every server stopped.
step "bench: bench/jobs.py --smoke"
python3 bench/jobs.py --build "$build" --smoke
step "bench: bench/jobs.py --fairness --smoke"
python3 bench/jobs.py --build "$build" --fairness --smoke

# Status requests beside job submissions, the smoke version (seconds): jobs alone, jobs with
# status requests paced at 1,000/s, status alone; every job acknowledged, every status request
# answered about the queued job, every server stopped.
step "bench: bench/status.py --smoke"
python3 bench/status.py --build "$build" --smoke

# The curves, the smoke version (seconds, a few points each): every request right, 100 held
# connections taken, every server it starts stopped, and the plots drawn.
step "bench: bench/curves.py --smoke"
python3 bench/curves.py --build "$build" --smoke
