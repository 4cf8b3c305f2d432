#!/usr/bin/env bash
# The ABI of libsockecho against the committed baseline, abi/libsockecho.abi (abidw's XML of the
# shared library's exported functions, variables and the public types they use).
#
#   abi/check.sh            build the shared library in build-abi/ and compare: fails on any
#                           change to what the baseline holds (a removed or changed function,
#                           a type whose layout changed) and on a soname other than the
#                           baseline's; new functions pass.
#   abi/check.sh --update   write a new baseline from the current tree. An incompatible change
#                           is refused unless the soname changed with it: an intended break
#                           bumps the minor version in project(VERSION) (libsockecho.so.0.MINOR
#                           while the major is 0) and updates the baseline in the same commit.
#   abi/check.sh --update --force
#                           write it anyway (before the first release, a break needs no bump).
#
# Needs abigail-tools (abidw, abidiff) and a C++ compiler; run from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

update=0
force=0
for arg in "$@"; do
  case $arg in
    --update) update=1 ;;
    --force) force=1 ;;
    *) echo "usage: abi/check.sh [--update [--force]]" >&2; exit 2 ;;
  esac
done

baseline=abi/libsockecho.abi
build=build-abi
# The library as a release builds it, with debug information for abidw to read its types.
cmake -B "$build" -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSOCKECHO_BUILD_TESTS=OFF -DSOCKECHO_BUILD_TOOLS=OFF -DSOCKECHO_INSTALL=OFF >/dev/null
cmake --build "$build" -j2 --target sockecho >/dev/null
library=$(find "$build" -maxdepth 1 -name 'libsockecho.so.*.*.*' | head -n1)
[ -n "$library" ] || { echo "abi: no libsockecho.so.* in $build" >&2; exit 1; }

# Types of the public headers only (--drop-private-types), no paths or line numbers, so the file
# changes only when the ABI does.
current=$build/libsockecho.abi
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --type-id-style hash \
  --headers-dir include/sockecho --headers-dir "$build/include/sockecho" --drop-private-types \
  --out-file "$current" "$library"

soname_of() { sed -n "s/.*soname='\([^']*\)'.*/\1/p" "$1" | head -n1; }

compare() {
  # abidiff's status is a bit field: 1 error, 2 usage, 4 a change, 8 an incompatible change.
  # --no-added-syms: new functions and variables are not a change to what callers use.
  local status=0
  abidiff --no-added-syms "$baseline" "$current" || status=$?
  return "$status"
}

if ((update)); then
  if [ -f "$baseline" ] && ((!force)); then
    status=0
    compare >/dev/null || status=$?
    if ((status & 3)); then
      echo "abi: abidiff failed (status $status)" >&2
      exit 1
    fi
    if ((status & 12)) && [ "$(soname_of "$baseline")" = "$(soname_of "$current")" ]; then
      compare || true
      echo "abi: the change above breaks the ABI of $(soname_of "$current"): bump the minor" \
        "version in project(VERSION) (the soname carries it) and update again, or pass --force" >&2
      exit 1
    fi
  fi
  cp "$current" "$baseline"
  echo "abi: $baseline written for $(soname_of "$current")"
  exit 0
fi

[ -f "$baseline" ] || { echo "abi: no $baseline: write it with abi/check.sh --update" >&2; exit 1; }
if [ "$(soname_of "$baseline")" != "$(soname_of "$current")" ]; then
  echo "abi: the baseline is of $(soname_of "$baseline"), the library $(soname_of "$current"):" \
    "a new soname needs a new baseline (abi/check.sh --update)" >&2
  exit 1
fi
status=0
compare || status=$?
if ((status != 0)); then
  echo "abi: libsockecho's ABI differs from $baseline (abidiff status $status, above). If the" \
    "break is intended: bump the minor version in project(VERSION) and run abi/check.sh --update" >&2
  exit 1
fi
echo "abi: $(soname_of "$current") matches $baseline"
