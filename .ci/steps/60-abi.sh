#!/usr/bin/env bash
# The ABI of libsockecho against the committed baseline (abi/libsockecho.abi), with abidiff:
# an accidental break (a function removed or changed, a public type whose layout changed) fails.
# An intended break bumps the minor version (the soname is libsockecho.so.0.MINOR while the
# major is 0) and updates the baseline in the same commit: abi/check.sh --update.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages abigail-tools

step "abi: build the shared library in build-abi, abidiff against abi/libsockecho.abi"
abi/check.sh
