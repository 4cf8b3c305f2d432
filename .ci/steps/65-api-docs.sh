#!/usr/bin/env bash
# The API reference: Doxygen over the public headers (cmake/api-docs.cmake), with warnings as
# errors, so a header comment Doxygen cannot read fails the step. The pages stay in build-docs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages doxygen

build=build-docs
step "api docs: doxygen into $build/api/html"
cmake -B "$build" -DSOCKECHO_BUILD_DOCS=ON -DSOCKECHO_BUILD_TESTS=OFF -DSOCKECHO_BUILD_TOOLS=OFF \
  -DSOCKECHO_INSTALL=OFF >/dev/null
rm -rf "$build/api"
cmake --build "$build" --target sockecho_docs
# A page for the classes a reader starts from, and none for what is private.
for page in classsockecho_1_1Server.html classsockecho_1_1Listener.html index.html; do
  [ -f "$build/api/html/$page" ] || { echo "api docs: no $page" >&2; exit 1; }
done
if compgen -G "$build/api/html/*detail*" >/dev/null; then
  echo "api docs: a page for the detail namespace:" "$build"/api/html/*detail* >&2
  exit 1
fi
echo "api docs: $(find "$build/api/html" -name '*.html' | wc -l) pages, no warning"
