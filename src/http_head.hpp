// The metrics listener's HTTP request head parser. Private to the library: the metrics protocol
// (metrics.cpp) is its one user; its test (tests/http_head_test.cpp) and fuzzer
// (tests/fuzz/fuzz_http.cpp) compile http_head.cpp in, as nothing here is exported.
#pragma once

#include <string_view>

namespace sockecho::detail {

// The head of an HTTP request, as far as the metrics listener needs it.
struct HttpRequestHead {
  enum class State {
    incomplete,  // no blank line yet: read more
    complete,    // method and target are set
    bad,         // not an HTTP/1.x request line, or a header line without a colon
  };
  State state = State::incomplete;
  std::string_view method;  // "GET"
  std::string_view target;  // "/metrics", without any "?query"
};

// Parses the request line and header lines of `text` (CRLF or bare LF line ends) without
// copying: the views point into `text`. Strict: "METHOD SP TARGET SP HTTP/1.x", a target that
// starts with '/', header lines "name: value" with a token name. Fuzzed (fuzz_http).
[[nodiscard]] HttpRequestHead parse_http_head(std::string_view text) noexcept;

}  // namespace sockecho::detail
