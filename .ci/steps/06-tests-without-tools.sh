#!/usr/bin/env bash
# The tests build without the programs: with -DSOCKECHO_BUILD_TOOLS=OFF the unit tests (the
# library in-process) and the fuzz corpora of the library's parsers configure, build and pass,
# so nothing but tests of tools/ depends on tools/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh

build=build-no-tools
step "tests without tools: configure and build in $build"
cmake -B "$build" -DSOCKECHO_BUILD_TOOLS=OFF -DSOCKECHO_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j2 >/dev/null
[ ! -e "$build/tools" ] || { echo "$build built tools/ with SOCKECHO_BUILD_TOOLS=OFF" >&2; exit 1; }

step "tests without tools: ctest"
ctest --test-dir "$build" --output-on-failure -j2
