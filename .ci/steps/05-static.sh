#!/usr/bin/env bash
# Static checks: clang-format, clang-tidy with the repo's .clang-tidy, and cppcheck, over src/,
# tools/ and tests/ (fuzz targets included). Any finding fails the step. Locally:
#   cmake --preset default && run-clang-tidy -p build -j 2 -quiet "$PWD/(src|tools|tests)/"
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages clang-format clang-tidy cppcheck

mapfile -t sources < <(git ls-files 'include/*.hpp' 'src/*.cpp' 'tools/*.cpp' 'tools/*.hpp' \
  'tests/*.cpp' 'tests/*.hpp')

step "clang-format: ${#sources[@]} files match .clang-format"
clang-format --dry-run -Werror "${sources[@]}"

# Configuring alone writes the compile database and the generated version header, which is all
# the analysers need.
cmake -B build-static -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null

step "clang-tidy (bugprone, cert, concurrency, performance, modernize)"
# run-clang-tidy forces colour on; the log reads better without it. Its exit status is the verdict.
tidy_status=0
run-clang-tidy -p build-static -j 2 -quiet "$PWD/(src|tools|tests)/" >build-static/clang-tidy.log 2>&1 ||
  tidy_status=$?
sed 's/\x1b\[[0-9;]*m//g' build-static/clang-tidy.log
if [ "$tidy_status" -ne 0 ]; then
  echo "clang-tidy found problems (above)" >&2
  exit 1
fi

step "cppcheck (warning, performance, portability)"
cppcheck --project=build-static/compile_commands.json --library=googletest --library=posix \
  --enable=warning,performance,portability --inline-suppr \
  --suppressions-list=.cppcheck-suppressions --error-exitcode=1 -j 2 --quiet \
  --template='{file}:{line}: {severity} {id}: {message}'
echo "static checks clean"
