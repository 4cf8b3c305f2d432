# Doxygen's input filter for include/sockecho/ (cmake/api-docs.cmake): the headers keep plain //
# comments, easy to read as they are, and this turns them into the documentation comments Doxygen
# reads, on the fly; the files are not changed.
#   - the comment block a header opens with documents the file (//! \file);
#   - a comment line of its own documents what follows it (///);
#   - a comment after code on the same line documents that member or enumerator (///<);
#   - in comment text outside `code spans`, characters Doxygen would take for commands or HTML
#     (\ @ < > & # % $) are escaped, so "@name" or "<what>" stay text.

# The text of a comment with Doxygen's special characters escaped outside backtick spans.
function escape(text,    out, i, c, code) {
  out = ""
  code = 0
  for (i = 1; i <= length(text); i++) {
    c = substr(text, i, 1)
    if (c == "`") code = !code
    else if (!code && index("\\@<>&#%$", c) > 0) out = out "\\"
    # "::ffff" or "::1" after a space would be an explicit link request; \:: is the text.
    else if (!code && c == ":" && substr(text, i, 2) == "::" && (i == 1 || substr(text, i - 1, 1) !~ /[A-Za-z0-9_>]/)) out = out "\\"
    out = out c
  }
  return out
}

BEGIN { opening = 1 }

{
  line = $0
  if (opening && match(line, /^\/\/ ?/)) {
    if (NR == 1) print "//! \\file"
    print "//! " escape(substr(line, RLENGTH + 1))
    next
  }
  opening = 0
  if (match(line, /^[ \t]*\/\/ ?/)) {
    indent = substr(line, 1, RLENGTH)
    sub(/\/\/ ?$/, "", indent)
    print indent "/// " escape(substr(line, RLENGTH + 1))
    next
  }
  # Code, then "  // comment": the comment is the member's, unless the // is inside a string.
  # (Not after a closing brace or a preprocessor line: "}  // namespace sockecho" documents nothing.)
  at = index(line, "  // ")
  if (at > 0 && line !~ /^[ \t]*(}|#)/) {
    code_part = substr(line, 1, at - 1)
    quotes = gsub(/"/, "\"", code_part)
    if (quotes % 2 == 0) {
      print code_part "  ///< " escape(substr(line, at + 5))
      next
    }
  }
  print line
}
