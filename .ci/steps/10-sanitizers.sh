#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (with LeakSanitizer),
# then the concurrency tests (ctest label "concurrency") under ThreadSanitizer. The programs are
# built sanitized too, so the tests that spawn sockecho-server and sockecho-client run them
# sanitized: a report aborts the child, and the test sees the abort in its exit status or its
# stderr. Options are in CMakePresets.json; locally: cmake --workflow --preset asan (or tsan).
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh

step "ASan + UBSan + LSan: build, then every test"
cmake --workflow --preset asan
# A sanitizer skips a few tests of its own (its allocator hides memory, UBSan's probes take a
# descriptor): listed with their reasons, never a failure.
tests/run --report build-asan

step "TSan: build the concurrency tests, then run them"
cmake --workflow --preset tsan
tests/run --report build-tsan
