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

# Prints a step banner with the elapsed time of the whole run.
step() {
  echo "=== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"
}
