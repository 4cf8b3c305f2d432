#!/bin/sh
# Usage: exported_symbols.sh LIBRARY SOURCE_DIR
#
# Fails when libsockecho exports a private name: anything of the detail namespace, of the private
# headers of src/, or a private nested class that its public header marks SOCKECHO_NO_EXPORT
# (Logger::Batch, JobQueue::Entry...). LIBRARY is libsockecho.so (its dynamic symbols) or
# libsockecho.a (the symbols of its objects that are neither local nor hidden: what a shared
# library of the same objects would export). It also checks that public names are exported, so
# that it cannot pass on a library that exports nothing.
set -eu
library=$1
source_dir=$2

case $library in
  *.so | *.so.*) table=--dyn-syms ;;
  *) table=--syms ;;
esac

# readelf -W: Num Value Size Type Bind Vis Ndx Name. Defined (Ndx not UND), global or weak, and
# visible (DEFAULT or PROTECTED): exported, or would be from a shared library.
exported=$(readelf -W "$table" "$library" |
  awk '$5 ~ /^(GLOBAL|WEAK|UNIQUE)$/ && $6 ~ /^(DEFAULT|PROTECTED)$/ && $7 != "UND" && $8 != "" {
         print $8 }' | sed 's/@.*//' | c++filt | sort -u)

# The private names, each a qualified prefix:
#  - the detail namespace, which every private header of src/ opens;
#  - a namespace other than sockecho that a private header opens, and a class a private header
#    defines in namespace sockecho (class Logger::Batch);
#  - each nested class a public header marks SOCKECHO_NO_EXPORT, inside its exported class.
private=$(
  echo "sockecho::detail"
  for header in "$source_dir"/src/*.hpp; do
    sed -n 's/^namespace \(sockecho::[A-Za-z_:]*\) {.*/\1/p' "$header"
    if grep -q '^namespace sockecho {' "$header"; then
      sed -n 's/^\(class\|struct\) \([A-Za-z_][A-Za-z_:]*\)[ {:].*/sockecho::\2/p' "$header"
    fi
  done
  for header in "$source_dir"/include/sockecho/*.hpp; do
    awk '/^(class|struct) SOCKECHO_EXPORT / { outer = $3 }
         /^  +(class|struct) SOCKECHO_NO_EXPORT / { sub(/[;{].*/, "", $3); print "sockecho::" outer "::" $3 }' \
      "$header"
  done
)

# A symbol is of a private name when its own name (before its parameter list, after what
# "vtable for " and the like put before it, or a template's return type) begins with one.
leaks=$(printf '%s\n' "$exported" | awk -v private="$private" '
  BEGIN { n = split(private, names, "\n") }
  {
    head = $0
    sub(/^(vtable|typeinfo|typeinfo name|VTT|construction vtable|guard variable) for /, "", head)
    sub(/^(non-virtual |virtual |covariant return )?thunk to /, "", head)
    paren = index(head, "(")
    if (paren > 0) head = substr(head, 1, paren - 1)
    for (i = 1; i <= n; i++) {
      if (names[i] == "") continue
      start = index(head, names[i])
      if (start == 0) continue
      before = start == 1 ? " " : substr(head, start - 1, 1)
      after = substr(head, start + length(names[i]), 1)
      if (before == " " && (after == "" || after == ":" || after == "<")) { print; next }
    }
  }')

status=0
if [ -n "$leaks" ]; then
  echo "$library exports private names (mark them hidden, or their class SOCKECHO_NO_EXPORT):" >&2
  printf '%s\n' "$leaks" | sed 's/^/  /' >&2
  status=1
fi

# Public names that must stay exported: a free function, a class's member, an exception's
# typeinfo (catching it across the library's boundary needs it).
for public in 'sockecho::resolve(' 'sockecho::Listener::bind(' 'typeinfo for sockecho::SpoolError'; do
  case $exported in
    *"$public"*) ;;
    *)
      echo "$library does not export $public: is SOCKECHO_EXPORT still on it?" >&2
      status=1
      ;;
  esac
done

count=$(printf '%s\n' "$exported" | grep -c 'sockecho::' || true)
echo "$library: $count exported names of sockecho, none private ($(printf '%s\n' "$private" | wc -l) private prefixes checked)"
exit $status
