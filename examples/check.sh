#!/usr/bin/env bash
# Runs an example daemon and client against each other and checks the reply, and shoutd (the
# daemon on sockecho::Daemon) with the same client when its path is given:
#   examples/check.sh path/to/wordcountd path/to/wordcount [path/to/shoutd]
# The daemon starts on a free port (--port 0) and is stopped with SIGTERM, which must end it
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

# The ready line arrives through a FIFO, so the wait ends as soon as it is written.
mkfifo "$work/ready"
"$daemon" --port 0 --top 3 >"$work/ready" 2>"$work/log" &
pid=$!
exec 3<"$work/ready"
if ! read -r -t 20 ready <&3; then
  echo "check.sh: $daemon printed no ready line; its log:" >&2
  cat "$work/log" >&2
  exit 1
fi
port=${ready##*:}

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

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
if [ "$status" -ne 0 ]; then
  echo "check.sh: $daemon exited with $status after SIGTERM; its log:" >&2
  cat "$work/log" >&2
  exit 1
fi
grep -q ' stop accepted=2 ok=2 ' "$work/log" || { cat "$work/log" >&2; exit 1; }
echo "ok: $daemon with $client on port $port"

[ -n "$shoutd" ] || exit 0
# shoutd: the Daemon's ready line, its handler's reply, and a clean stop on SIGTERM.
mkfifo "$work/shout-ready"
"$shoutd" --port 0 >"$work/shout-ready" 2>"$work/shout-log" &
pid=$!
exec 4<"$work/shout-ready"
if ! read -r -t 20 ready <&4; then
  echo "check.sh: $shoutd printed no ready line; its log:" >&2
  cat "$work/shout-log" >&2
  exit 1
fi
port=${ready##*:}
got=$("$client" --port "$port" "$work/text")
if [ "$got" != $'THE CAT AND THE HAT.\nTHE END' ]; then
  printf 'check.sh: unexpected reply from %s: %s\n' "$shoutd" "$got" >&2
  exit 1
fi
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || { echo "check.sh: $shoutd exited with $status" >&2; cat "$work/shout-log" >&2; exit 1; }
grep -q ' stop accepted=1 ok=1 ' "$work/shout-log" || { cat "$work/shout-log" >&2; exit 1; }
echo "ok: $shoutd with $client on port $port"
