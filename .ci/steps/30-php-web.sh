#!/usr/bin/env bash
# The post's architecture end to end: examples/php-web served by `php -S`, handing jobs to the
# sockecho-server built here in build-php-web/ (this step's own build), driven by Debian's headless
# Chromium through playwright-core (examples/php-web/test/browser-test.mjs): a reply, the daemon
# down, and the jobs page following jobs through the status listener (one retried after exit 75,
# one cancelled while queued). The PHP client's own tests (clients/php/tests) already ran under
# ctest.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh

# chromium: the browser; fonts-droid-fallback: CJK glyphs for the reply's "数据是".
need_packages chromium fonts-droid-fallback php-cli
# Node.js 20 and npm come with this kind of machine (playwright-core needs Node.js >= 20).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
((node_major >= 20)) || { echo "the browser test needs Node.js >= 20 and npm (found: ${node_major})" >&2; exit 1; }

# A build of its own, of the one program it runs (the README's test command builds in build/).
build=build-php-web
step "php-web: build sockecho-server in $build"
cmake -B "$build" -DSOCKECHO_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target sockecho-server >/dev/null
server=$PWD/$build/tools/sockecho-server

# playwright-core brings no browser of its own; the test uses /usr/bin/chromium.
(cd examples/php-web/test && npm ci --no-audit --no-fund)
# Screenshots go to the build tree: this checks the page, it does not rewrite docs/.
node examples/php-web/test/browser-test.mjs --server "$server" --chromium /usr/bin/chromium \
  --screenshots "$build/php-web-screenshots"
