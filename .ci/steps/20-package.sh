#!/usr/bin/env bash
# Installing sockecho the ways its users do, and running what got installed:
#  - cmake --install into a prefix: files in place, no internal library;
#  - examples/ (a daemon of its own and a client) built against it with find_package and with
#    pkg-config, and from the source tree with add_subdirectory (shared library) and FetchContent,
#    then each daemon run against clients of the four builds;
#  - a shared library build installed into a prefix, its programs run from there;
#  - cpack's .deb, built with Debian's hardening flags: lintian (no error, no warning that
#    packaging/debian/lintian-overrides does not explain), contents, dpkg -i, the installed programs once (direct and socket-activated by
#    systemd's own systemd-socket-activate), man pages, completion, units checked by
#    systemd-analyze, the examples against the installed package, then dpkg -r.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh

need_packages pkgconf groff-base man-db dpkg-dev file systemd git lintian

# The version of project() in CMakeLists.txt, and the soname it gives: while the major version is
# 0 it carries the minor too (libsockecho.so.0.1), as the package's version file does.
version=$(sed -n 's/^project(sockecho VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
IFS=. read -r major minor _ <<<"$version"
if ((major == 0)); then soname=libsockecho.so.$major.$minor; else soname=libsockecho.so.$major; fi

work=$(mktemp -d)
server_pid=
finish() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  if [ "$(dpkg-query -W -f='${Status}' sockecho 2>/dev/null)" = "install ok installed" ]; then
    dpkg --purge sockecho >/dev/null
  fi
  rm -rf "$work"
}
trap finish EXIT

fail() {
  echo "20-package: $*" >&2
  exit 1
}

# Starts a server command and waits for its ready line (wait_for_ready_line, .ci/lib.sh); sets
# server_pid and ready.
start_server() {
  wait_for_ready_line "$work/server.log" "$@" || { server_pid=$ready_pid; fail "no ready line from $*"; }
  server_pid=$ready_pid
  ready=$ready_line
}

# Sends SIGTERM to the server started last; it must exit 0.
stop_server() {
  local status=0
  kill -TERM "$server_pid"
  wait "$server_pid" || status=$?
  server_pid=
  exec {ready_fd}<&-
  [ "$status" -eq 0 ] || { cat "$work/server.log" >&2; fail "server exited $status on SIGTERM"; }
}

# --- cmake --install ------------------------------------------------------------------------------
step "package: release build for /usr (library and programs only), Debian's build flags"
# The flags given on the command line, not through the environment, which cmake reads only into a
# new cache. hardening=+all adds -z now (lintian: hardening-no-bindnow).
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cmake -B build-pkg -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DSOCKECHO_BUILD_TESTS=OFF \
  -DCMAKE_CXX_FLAGS="$(dpkg-buildflags --get CPPFLAGS) $(dpkg-buildflags --get CXXFLAGS)" \
  -DCMAKE_EXE_LINKER_FLAGS="$(dpkg-buildflags --get LDFLAGS)" >"$work/configure.log"
unset DEB_BUILD_MAINT_OPTIONS
cmake --build build-pkg -j2 >"$work/build.log" || { cat "$work/build.log"; exit 1; }

step "package: cmake --install --prefix (staging)"
prefix=$work/prefix
cmake --install build-pkg --prefix "$prefix" >/dev/null
libdir=$(grep -m1 '^CMAKE_INSTALL_LIBDIR:' build-pkg/CMakeCache.txt | cut -d= -f2)
for f in bin/sockecho-server bin/sockecho-client include/sockecho/sockecho.hpp \
  include/sockecho/systemd.hpp include/sockecho/version.hpp "$libdir/libsockecho.a" \
  "$libdir/cmake/sockecho/sockecho-config.cmake" "$libdir/cmake/sockecho/sockecho-config-version.cmake" \
  "$libdir/cmake/sockecho/sockecho-targets.cmake" "$libdir/pkgconfig/sockecho.pc" \
  share/man/man1/sockecho-server.1.gz share/man/man1/sockecho-client.1.gz \
  share/bash-completion/completions/sockecho-server share/bash-completion/completions/sockecho-client \
  lib/systemd/system/sockecho.service lib/systemd/system/sockecho.socket share/doc/sockecho/copyright; do
  [ -f "$prefix/$f" ] || fail "cmake --install did not install $f"
done
# The documents as in the source tree: every relative link of an installed one (README.md to
# docs/, docs/ to bench/ and back) names an installed file.
docdir=$prefix/share/doc/sockecho
[ -f "$docdir/README.md" ] && [ -f "$docdir/docs/php.md" ] || fail "the documents are not installed"
while IFS= read -r page; do
  while IFS= read -r target; do
    [ -e "$(dirname "$page")/$target" ] || fail "${page#"$docdir"/} links to $target, not installed"
  done < <(grep -o '](\([^)#:]*\))' "$page" | sed 's/^](//; s/)$//' | sort -u)
done < <(find "$docdir" -name '*.md')
# The Debian changelog and lintian's overrides belong to the .deb alone.
[ -z "$(find "$prefix" -name 'changelog.Debian*' -o -name lintian)" ] || fail "cmake --install installed Debian-only files"
[ -z "$(find "$prefix" -name '*sockecho_cli*')" ] || fail "the internal sockecho_cli got installed"
grep -q "^ExecStart=$prefix/bin/sockecho-server " "$prefix/lib/systemd/system/sockecho.service" ||
  fail "sockecho.service does not start $prefix/bin/sockecho-server"
[ "$(PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig pkg-config --variable=includedir sockecho)" = "$prefix/include" ] ||
  fail "sockecho.pc does not point at the installed headers"

# The version file answers find_package(sockecho X.Y) as the soname does: while the major version
# is 0, only the same minor version is compatible.
version_ok() {
  mkdir -p "$work/find-$1"
  printf 'cmake_minimum_required(VERSION 3.21)\nproject(find LANGUAGES CXX)\nfind_package(sockecho %s CONFIG REQUIRED)\n' \
    "$1" >"$work/find-$1/CMakeLists.txt"
  cmake -S "$work/find-$1" -B "$work/find-$1/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1
}
version_ok "$major.$minor" || fail "find_package(sockecho $major.$minor) is refused"
if ((major == 0)); then
  ! version_ok "$major.$((minor + 1))" && ! version_ok "$major.$((minor - 1))" ||
    fail "find_package(sockecho 0.x) accepts another minor version of a 0.x library"
fi

# --- examples/ built four ways, run against each other ---------------------------------------------
step "examples: find_package(sockecho CONFIG) from the staging prefix"
cmake -S examples -B "$work/ex-package" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/ex-package" -j2 >/dev/null

step "examples: pkg-config"
make -s -C examples PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" OUT="$work/ex-pkgconfig"

step "examples: add_subdirectory, shared library"
cmake -S examples -B "$work/ex-subdir" -DSOCKECHO_FROM=subdirectory -DBUILD_SHARED_LIBS=ON >/dev/null
cmake --build "$work/ex-subdir" -j2 >/dev/null
[[ $(ldd "$work/ex-subdir/wordcountd") == *"$soname => $work/ex-subdir/"* ]] ||
  fail "wordcountd is not linked to the $soname it built"

step "examples: FetchContent of this checkout"
cmake -S examples -B "$work/ex-fetch" -DSOCKECHO_FROM=fetch -DSOCKECHO_GIT_REPOSITORY="file://$PWD" \
  -DSOCKECHO_GIT_TAG="$(git rev-parse HEAD)" >/dev/null
cmake --build "$work/ex-fetch" -j2 >/dev/null

step "examples: each daemon against the clients of the builds"
builds=(package pkgconfig subdir fetch)
for i in "${!builds[@]}"; do
  daemon=$work/ex-${builds[$i]}/wordcountd
  examples/check.sh "$daemon" "$work/ex-${builds[$i]}/wordcount" "$work/ex-${builds[$i]}/shoutd"
  examples/check.sh "$daemon" "$work/ex-${builds[$(((i + 1) % 4))]}/wordcount"
done

step "package: shared library (-DBUILD_SHARED_LIBS=ON), installed and run from its prefix"
cmake -B "$work/build-shared" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DSOCKECHO_BUILD_TESTS=OFF >/dev/null
cmake --build "$work/build-shared" -j2 >/dev/null
shared=$work/prefix-shared
cmake --install "$work/build-shared" --prefix "$shared" >/dev/null
shared_libdir=$(grep -m1 '^CMAKE_INSTALL_LIBDIR:' "$work/build-shared/CMakeCache.txt" | cut -d= -f2)
[ -L "$shared/$shared_libdir/libsockecho.so" ] && [ -f "$shared/$shared_libdir/libsockecho.so.$version" ] &&
  [ "$(readlink "$shared/$shared_libdir/$soname")" = "libsockecho.so.$version" ] ||
  fail "the shared library and its links are not installed"
[[ $(ldd "$shared/bin/sockecho-server") == *"$soname => $shared/"* ]] ||
  fail "the installed sockecho-server does not find its $soname"
[[ $(PKG_CONFIG_PATH=$shared/$shared_libdir/pkgconfig pkg-config --libs sockecho) != *-pthread* ]] ||
  fail "sockecho.pc of a shared library should keep -pthread in Libs.private"
start_server "$shared/bin/sockecho-server" --port 0 --prefix ''
reply=$("$shared/bin/sockecho-client" --port "${ready##*:}" --send shared --quiet)
[ "$reply" = shared ] || fail "shared build replied '$reply'"
stop_server

# --- the .deb --------------------------------------------------------------------------------------
step "package: cpack -G DEB"
rm -f build-pkg/sockecho_*.deb
(cd build-pkg && cpack -G DEB >"$work/cpack.log") || { cat "$work/cpack.log"; exit 1; }
deb=$(ls build-pkg/sockecho_*.deb)
dpkg-deb -I "$deb" | sed -n '/Package:/p; /Version:/p; /Depends:/p; /Section:/p; /Maintainer:/p'

step "package: lintian"
# An error or a warning fails the step unless packaging/debian/lintian-overrides explains it, and
# so does an override that no longer matches. The info tags (packaging/README.md explains them)
# and the overrides with their reasons are printed for the log. (--fail-on would count the shown
# overrides as failures, so the step reads the output: overridden tags are O:, not E: or W:.)
lintian_status=0
lintian --display-info --show-overrides --fail-on none "$deb" >"$work/lintian.txt" 2>"$work/lintian.err" ||
  lintian_status=$?
grep -v '^running with root privileges' "$work/lintian.err" >&2 || true
cat "$work/lintian.txt"
[ "$lintian_status" -eq 0 ] || fail "lintian exited $lintian_status"
! grep -Eq '^[EW]: |(unused|mismatched)-override' "$work/lintian.txt" ||
  fail "lintian: errors, warnings or stale overrides on $deb"
maintainer=$(sed -n 's/^SOCKECHO_MAINTAINER:STRING=//p' build-pkg/CMakeCache.txt)
[ "$(dpkg-deb -f "$deb" Maintainer)" = "$maintainer" ] || fail "Maintainer is not SOCKECHO_MAINTAINER ($maintainer)"
# (Never "cmd | grep -q" here: grep stops reading early, cmd gets SIGPIPE, and pipefail fails.)
[[ $(dpkg-deb -f "$deb" Depends) == *libc6* ]] || fail "the package's Depends was not computed"
dpkg-deb -c "$deb" >"$work/contents"
for f in usr/bin/sockecho-server usr/bin/sockecho-client usr/include/sockecho/server.hpp \
  "usr/$libdir/libsockecho.a" "usr/$libdir/pkgconfig/sockecho.pc" "usr/$libdir/cmake/sockecho/sockecho-config.cmake" \
  usr/share/man/man1/sockecho-server.1.gz usr/share/man/man1/sockecho-client.1.gz \
  usr/lib/systemd/system/sockecho.service usr/lib/systemd/system/sockecho.socket \
  usr/share/bash-completion/completions/sockecho-server usr/share/bash-completion/completions/sockecho-client \
  usr/share/doc/sockecho/copyright usr/share/doc/sockecho/changelog.Debian.gz usr/share/lintian/overrides/sockecho; do
  grep -q " \./$f\$" "$work/contents" || fail "$deb lacks /$f"
done

step "package: dpkg -i"
dpkg -i "$deb"
changelog=$(zcat /usr/share/doc/sockecho/changelog.Debian.gz)
[ "$(dpkg-parsechangelog -l- -S Version <<<"$changelog")" = "$(dpkg-deb -f "$deb" Version)" ] ||
  fail "changelog.Debian.gz is not about version $(dpkg-deb -f "$deb" Version)"
[ "$(dpkg-parsechangelog -l- -S Maintainer <<<"$changelog")" = "$maintainer" ] ||
  fail "changelog.Debian.gz is not signed by $maintainer"

step "package: the installed programs, once"
start_server /usr/bin/sockecho-server --port 0
port=${ready##*:}
[ "$ready" = "listening on 127.0.0.1:$port" ] || fail "ready line: $ready"
reply=$(/usr/bin/sockecho-client --port "$port" --send 'from the package' --quiet | od -An -tx1 | tr -d ' \n')
expected=$(printf '数据是 from the package' | od -An -tx1 | tr -d ' \n')
[ "$reply" = "$expected" ] || fail "reply bytes $reply, expected $expected"
stop_server
grep -q ' stop accepted=1 ok=1 ' "$work/server.log" || fail "server log: $(cat "$work/server.log")"

step "package: socket-activated by systemd-socket-activate (systemd's own LISTEN_FDS side)"
# It needs a fixed port: take one the kernel picks and let it go again.
start_server /usr/bin/sockecho-server --port 0 --quiet
port=${ready##*:}
stop_server
mkfifo "$work/activate.err"
systemd-socket-activate --listen="127.0.0.1:$port" /usr/bin/sockecho-server --prefix '> ' \
  >"$work/activated.out" 2>"$work/activate.err" &
server_pid=$!
exec 5<"$work/activate.err"
read -r -t 20 line <&5 || fail "systemd-socket-activate did not start"
[ "$line" = "Listening on 127.0.0.1:$port as 3." ] || fail "systemd-socket-activate: $line"
# The first connection starts the server on the inherited socket; it answers as usual.
reply=$(/usr/bin/sockecho-client --port "$port" --send activated --quiet)
[ "$reply" = "> activated" ] || fail "socket-activated reply: $reply"
inherited=
while read -r -t 20 line <&5; do
  echo "  $line"
  if [[ $line == *" socket-activation fd=3 listen=127.0.0.1:$port" ]]; then
    inherited=yes
    break
  fi
done
[ -n "$inherited" ] || fail "the server did not log that it took the inherited socket"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
exec 5<&-
[ "$status" -eq 0 ] || fail "socket-activated server exited $status"
[ "$(cat "$work/activated.out")" = "listening on 127.0.0.1:$port" ] || fail "ready line: $(cat "$work/activated.out")"

step "package: man pages, completion, units"
[ "$(man -w sockecho-server)" = /usr/share/man/man1/sockecho-server.1.gz ] || fail "man -w sockecho-server"
warnings=$(MANWIDTH=80 MANPAGER=cat man --warnings sockecho-client 2>&1 >/dev/null)
[ -z "$warnings" ] || fail "man sockecho-client: $warnings"
[[ $(MANWIDTH=80 MANPAGER=cat man sockecho-server) == *"SOCKET ACTIVATION"* ]] || fail "man sockecho-server"
offered=$(bash -c 'source /usr/share/bash-completion/completions/sockecho-server
  COMP_WORDS=(sockecho-server --mo); COMP_CWORD=1; _sockecho_server; echo "${COMPREPLY[*]}"')
[ "$offered" = "--mode" ] || fail "installed completion offered '$offered'"
verify=$(systemd-analyze verify /usr/lib/systemd/system/sockecho.socket /usr/lib/systemd/system/sockecho.service 2>&1) ||
  fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
systemd-analyze security --offline=true --threshold=20 /usr/lib/systemd/system/sockecho.service | tail -1
# The background drop-in, as an administrator would install it.
dropin=/usr/share/doc/sockecho/examples/background.conf
[ -f "$dropin" ] || fail "$dropin is not installed"
mkdir -p /etc/systemd/system/sockecho.service.d
cp "$dropin" /etc/systemd/system/sockecho.service.d/background.conf
verify=$(systemd-analyze verify /usr/lib/systemd/system/sockecho.service 2>&1) || verify_status=$?
rm -rf /etc/systemd/system/sockecho.service.d
[ "${verify_status:-0}" -eq 0 ] && [ -z "$verify" ] || fail "systemd-analyze verify with background.conf: $verify"
# The Unix socket unit, as an administrator would install it beside the service.
unix_unit=/usr/share/doc/sockecho/examples/sockecho-unix.socket
[ -f "$unix_unit" ] || fail "$unix_unit is not installed"
cp "$unix_unit" /etc/systemd/system/sockecho-unix.socket
verify=$(systemd-analyze verify /etc/systemd/system/sockecho-unix.socket /usr/lib/systemd/system/sockecho.service 2>&1) ||
  verify_status=$?
rm -f /etc/systemd/system/sockecho-unix.socket
[ "${verify_status:-0}" -eq 0 ] && [ -z "$verify" ] || fail "systemd-analyze verify sockecho-unix.socket: $verify"
# The status socket unit, beside the main one as an administrator would install it.
status_unit=/usr/share/doc/sockecho/examples/sockecho-status.socket
[ -f "$status_unit" ] || fail "$status_unit is not installed"
cp "$status_unit" /etc/systemd/system/sockecho-status.socket
verify=$(systemd-analyze verify /etc/systemd/system/sockecho-status.socket /usr/lib/systemd/system/sockecho.socket /usr/lib/systemd/system/sockecho.service 2>&1) ||
  verify_status=$?
rm -f /etc/systemd/system/sockecho-status.socket
[ "${verify_status:-0}" -eq 0 ] && [ -z "$verify" ] || fail "systemd-analyze verify sockecho-status.socket: $verify"
[ "$(pkg-config --modversion sockecho)" = "$version" ] ||
  fail "pkg-config does not find the installed sockecho"

step "examples: find_package against the installed package"
cmake -S examples -B "$work/ex-system" >/dev/null
cmake --build "$work/ex-system" -j2 >/dev/null
examples/check.sh "$work/ex-system/wordcountd" "$work/ex-system/wordcount"

step "package: dpkg -r, then --purge"
dpkg -r sockecho
[ ! -e /usr/bin/sockecho-server ] || fail "dpkg -r left /usr/bin/sockecho-server"
[ ! -e "/usr/$libdir/cmake/sockecho" ] || fail "dpkg -r left the CMake package"
dpkg --purge sockecho
[ -z "$(dpkg-query -W -f='${Status}' sockecho 2>/dev/null)" ] || fail "dpkg --purge left sockecho known"
step "package: all checks passed"
