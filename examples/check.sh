#!/usr/bin/env bash
# Runs an example daemon and client against each other and checks the reply, and shoutd (the
# daemon on sockecho::Daemon) with the same client when its path is given:
#   examples/check.sh path/to/wordcountd path/to/wordcount [path/to/shoutd]
# Each daemon starts on a free port (--port 0) and is stopped with SIGTERM, which must end it
# with status 0.
set -euo pipefail
daemon=$1
client=$2
shoutd=${3:-}
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Starts "$@" (a daemon and its arguments) with its log in $work/NAME.log, where NAME is $1's
# file name, and waits for its ready line: sets pid and port. The ready line arrives through a
# FIFO, so the wait ends as soon as it is written.
start() {
  local name
  name=$(basename "$1")
  mkfifo "$work/$name.ready"
  "$@" >"$work/$name.ready" 2>"$work/$name.log" &
  pid=$!
  # Kept open until the script ends, so a daemon that writes more to stdout meets no closed pipe.
  local ready ready_fd
  exec {ready_fd}<"$work/$name.ready"
  if ! read -r -t 20 ready <&"$ready_fd"; then
    echo "check.sh: $1 printed no ready line; its log:" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
  port=${ready##*:}
}

# Stops the daemon started last with SIGTERM: it must exit 0 and log `stop accepted=N ok=N`.
stop() {
  local daemon=$1 served=$2 name status=0
  name=$(basename "$daemon")
  kill -TERM "$pid"
  wait "$pid" || status=$?
  pid=
  if [ "$status" -ne 0 ] || ! grep -q " stop accepted=$served ok=$served " "$work/$name.log"; then
    echo "check.sh: $daemon exited with $status after SIGTERM; its log:" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
}

start "$daemon" --port 0 --top 3
printf 'The cat and the hat.\nThe end\n' >"$work/text"
expected=$'lines=2 words=7 bytes=29\nthe 3\nand 1\ncat 1'
got=$("$client" --port "$port" "$work/text")
if [ "$got" != "$expected" ]; then
  printf 'check.sh: unexpected reply from %s via %s:\n%s\n' "$daemon" "$client" "$got" >&2
  exit 1
fi
# Standard input works as well as a file.
got=$("$client" --port "$port" <"$work/text")
[ "$got" = "$expected" ] || { echo "check.sh: wrong reply for stdin: $got" >&2; exit 1; }
stop "$daemon" 2
echo "ok: $daemon with $client on port $port"

[ -n "$shoutd" ] || exit 0
# shoutd: the Daemon's ready line, its handler's reply, and a clean stop on SIGTERM.
start "$shoutd" --port 0
got=$("$client" --port "$port" "$work/text")
if [ "$got" != $'THE CAT AND THE HAT.\nTHE END' ]; then
  printf 'check.sh: unexpected reply from %s: %s\n' "$shoutd" "$got" >&2
  exit 1
fi
stop "$shoutd" 1
echo "ok: $shoutd with $client on port $port"
