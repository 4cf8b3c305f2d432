#!/usr/bin/env bash
# The PHP client as a PHP developer installs it: clients/php/composer.json passes `composer
# validate --strict`, and a scratch project requires it through a Composer path repository (no
# network: packagist is switched off) and uses it through Composer's autoloader against a real
# sockecho-server: a request, then a background job read back through the status listener. (PHPUnit runs the client's own tests under ctest: the test php_client.)
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
need_packages php-cli composer

build=build-php-web  # step 30's build, of the one program this step runs too
step "composer: build sockecho-server in $build"
cmake -B "$build" -DSOCKECHO_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target sockecho-server >/dev/null

step "composer: validate clients/php/composer.json"
composer validate --strict --no-interaction clients/php/composer.json

work=$(mktemp -d)
server_log=$work/server.log
ready_pid=
trap 'kill "$ready_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
export COMPOSER_HOME=$work/composer-home COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1

step "composer: a scratch project requires sockecho/client from a path repository"
mkdir "$work/app"
cat >"$work/app/composer.json" <<JSON
{
    "name": "example/app",
    "description": "A web application that hands jobs to sockecho-server",
    "type": "project",
    "license": "MIT",
    "require": {"sockecho/client": "*@dev"},
    "repositories": [
        {"packagist.org": false},
        {"type": "path", "url": "$PWD/clients/php", "options": {"symlink": false}}
    ]
}
JSON
cat >"$work/app/hand-off.php" <<'PHP'
<?php
// Hands one job to the daemon through the Composer-installed client; exits 1 on any failure.
declare(strict_types=1);
require __DIR__ . '/vendor/autoload.php';

try {
    $reply = (new Sockecho\Client('127.0.0.1', (int) $argv[1]))->request('hello');
} catch (Sockecho\Exception $e) {
    fwrite(STDERR, 'hand-off.php: ' . $e->getMessage() . "\n");
    exit(1);
}
if ($reply !== "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf hello") {
    fwrite(STDERR, 'hand-off.php: unexpected reply ' . bin2hex($reply) . "\n");
    exit(1);
}
echo $reply, "\n";
PHP
cat >"$work/app/job.php" <<'PHP'
<?php
// Hands one background job to the daemon and reads its result through its status listener, with
// the Composer-installed client; exits 1 on any failure.
declare(strict_types=1);
require __DIR__ . '/vendor/autoload.php';

try {
    $client = new Sockecho\Client('127.0.0.1', (int) $argv[1], status: $argv[2], readTimeout: 10.0);
    $job = $client->submit('photo-42.jpg');
    $done = $client->wait(Sockecho\Job::fromString((string) $job), 20.0);
} catch (Sockecho\Exception $e) {
    fwrite(STDERR, 'job.php: ' . $e->getMessage() . "\n");
    exit(1);
}
if (!$done->ok() || $done->output !== "PHOTO-42.JPG\n") {
    fwrite(STDERR, "job.php: unexpected end: {$done->line} " . json_encode($done->output) . "\n");
    exit(1);
}
echo "$job: {$done->line}\n";
PHP
(cd "$work/app" && composer install --no-progress)
[ -f "$work/app/vendor/sockecho/client/src/Client.php" ] || { echo "composer did not install the client" >&2; exit 1; }

step "composer: the installed client against sockecho-server"
wait_for_ready_line "$server_log" "./$build/tools/sockecho-server" --port 0 --quiet
php "$work/app/hand-off.php" "$ready_port"
kill -TERM "$ready_pid"
wait "$ready_pid"
exec {ready_fd}<&-

step "composer: a background job and its result through the installed client"
wait_for_ready_line "$server_log" "./$build/tools/sockecho-server" --port 0 --quiet \
  --background --status 127.0.0.1:0 --exec sh -c 'tr a-z A-Z; echo'
read -r -t 20 status_line <&"$ready_fd" || { cat "$server_log" >&2; echo "no status line" >&2; exit 1; }
[[ $status_line =~ ^status\ on\ (127\.0\.0\.1:[0-9]+)$ ]] || { echo "not a status line: $status_line" >&2; exit 1; }
php "$work/app/job.php" "$ready_port" "${BASH_REMATCH[1]}"
kill -TERM "$ready_pid"
wait "$ready_pid"
exec {ready_fd}<&-
echo "composer: the client installs and works through Composer's autoloader"
