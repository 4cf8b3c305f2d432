#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer targets (tests/fuzz/) with clang, ASan and UBSan, replays the seed
# corpora, then fuzzes every target for FUZZ_SECONDS (default 60), all at once on the machine's
# cores, and reports the executions of each. A crash fails the step and leaves its input in
# build-fuzz/artifacts/; add that file to tests/fuzz/corpus/<target>/ (and a unit test) so every
# build replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages clang libclang-rt-14-dev

seconds=${FUZZ_SECONDS:-60}
targets=(fuzz_cli fuzz_address fuzz_line fuzz_http fuzz_spool)

step "fuzz: build with clang -fsanitize=fuzzer,address,undefined; replay the seed corpora"
cmake --workflow --preset fuzz

step "fuzz: ${#targets[@]} targets for ${seconds} s each, in parallel"
work=build-fuzz/run
rm -rf "$work" build-fuzz/artifacts
mkdir -p "$work" build-fuzz/artifacts
pids=()
for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus seeded from the repository's; the seeds stay as they are.
  mkdir -p "$work/$target"
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$target-" \
    "$work/$target" "tests/fuzz/corpus/$target" >"$work/$target.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  if ! wait "${pids[$i]}"; then
    failed=1
    echo "--- ${targets[$i]} FAILED; the end of its log:"
    tail -n 60 "$work/${targets[$i]}.log"
  fi
done

printf '%-14s %14s %12s %11s\n' target executions exec/s new_inputs
for target in "${targets[@]}"; do
  log="$work/$target.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  printf '%-14s %14s %12s %11s\n' "$target" "${runs:-?}" "${rate:-?}" \
    "$(find "$work/$target" -type f | wc -l)"
done
if ((failed)); then
  echo "crash inputs:" build-fuzz/artifacts/*
  exit 1
fi
echo "fuzzing found nothing"
