#!/usr/bin/env bash
# Benchmark smoke test (well under 2 minutes): sockecho-bench against sockecho-server must get
# every reply right, small and large, and the comparison script must run end to end on a tiny
# budget. Timings are not checked here: a shared CI machine cannot judge speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages python3

build=build
server_out=$(mktemp)
./$build/tools/sockecho-server --port 0 --quiet >"$server_out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$server_out"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$server_out" && break
  sleep 0.1
done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$server_out")
[ -n "$port" ] || { echo "sockecho-server printed no ready line"; exit 1; }

./$build/tools/sockecho-bench --port "$port" --requests 5000 -c 8
./$build/tools/sockecho-bench --port "$port" --requests 40 -c 4 --size 4M
./$build/tools/sockecho-bench --port "$port" --duration 2 -c 16 --json

kill -TERM "$server"
wait "$server"
trap - EXIT
rm -f "$server_out"

# The comparison, every server and scenario once, briefly, into a scratch directory: it must
# run end to end; its numbers mean nothing on a tiny budget.
scratch=$(mktemp -d)
python3 bench/compare.py --repeat 1 --seconds 0.1 --large-seconds 0.1 \
  --results "$scratch/RESULTS.md" --chart "$scratch/results.svg"
grep -q '^## Targets' "$scratch/RESULTS.md"
rm -rf "$scratch"
