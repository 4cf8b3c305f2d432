# Helpers for .ci/run and its steps (sourced, not run).

# Installs Debian packages that are missing, as root, non-interactively.
need_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
}

# Runs "$@" with Debian's maintainer scripts told not to start services (a policy-rc.d that
# answers 101), as CI needs: the test packages' daemons (fail2ban, HAProxy, Prometheus) are only
# tools here, each test starts its own. A policy-rc.d already there is left as it is.
without_starting_services() {
  local policy=/usr/sbin/policy-rc.d created=0 status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created=1
  fi
  "$@" || status=$?
  if ((created)); then rm -f "$policy"; fi
  return "$status"
}

# Prints a step banner with the elapsed time of the whole run.
step() {
  echo "=== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"
}

# Starts "$@" in the background, its stdout on a FIFO and its stderr in the file $1 (shifted
# off), and waits at most READY_TIMEOUT seconds (default 20) for its first line, which must be a
# server's ready line "listening on HOST:PORT". Sets ready_pid, ready_line, ready_port, and
# ready_fd: the FIFO's reading end, which the caller closes (exec {ready_fd}<&-) once the server
# has exited, so a server that writes more to stdout never meets a closed pipe. On no ready line
# it prints the command's stderr and returns 1; the process, if still running, is left to the
# caller's cleanup through ready_pid.
wait_for_ready_line() {
  local log=$1
  shift
  local dir
  dir=$(mktemp -d)
  mkfifo "$dir/stdout"
  "$@" >"$dir/stdout" 2>"$log" &
  ready_pid=$!
  # Opening blocks until the child has opened its end; after that the name is not needed.
  exec {ready_fd}<"$dir/stdout"
  rm -rf "$dir"
  ready_line=
  ready_port=
  local status=0
  read -r -t "${READY_TIMEOUT:-20}" ready_line <&"$ready_fd" || status=$?
  if ((status > 128)); then
    cat "$log" >&2
    echo "no ready line within ${READY_TIMEOUT:-20} s from: $*" >&2
    return 1
  elif ((status != 0)); then
    cat "$log" >&2
    echo "stdout closed without a ready line: $*" >&2
    return 1
  fi
  if ! [[ $ready_line =~ ^listening\ on\ .+:([0-9]+)$ ]]; then
    cat "$log" >&2
    echo "not a ready line from $*: $ready_line" >&2
    return 1
  fi
  ready_port=${BASH_REMATCH[1]}
}
