// Fuzz target: the metrics listener's HTTP head parser (parse_http_head, src/http_head.hpp) on
// arbitrary bytes. What it returns must point into its input and be well-formed when complete, and
// more bytes must never change a verdict already given: a head found complete (or bad) in a prefix
// of the stream is the same head (still bad) in the whole of it, as the listener reads in pieces.
//
// Input: bytes 0 and 1: where to cut the stream into prefix and whole (modulo its size + 1);
// the rest is the stream.
#include <algorithm>
#include <cstdint>
#include <string_view>

#include "fuzz.hpp"
#include "http_head.hpp"

namespace {

using sockecho::detail::HttpRequestHead;
using State = HttpRequestHead::State;

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void check_head(const HttpRequestHead& head, std::string_view text) {
  if (head.state != State::complete) return;
  SOCKECHO_FUZZ_CHECK(!head.method.empty());
  SOCKECHO_FUZZ_CHECK(!head.target.empty() && head.target.front() == '/');
  SOCKECHO_FUZZ_CHECK(head.target.find('?') == std::string_view::npos);
  SOCKECHO_FUZZ_CHECK(inside(head.method, text) && inside(head.target, text));
  SOCKECHO_FUZZ_CHECK(std::none_of(head.target.begin(), head.target.end(),
                                   [](char c) { return static_cast<unsigned char>(c) <= 0x20; }));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sockecho::fuzz::Input input(data, size);
  const auto cut_choice = static_cast<std::size_t>(input.number(2));
  const std::string_view whole = input.rest();
  const std::string_view prefix = whole.substr(0, cut_choice % (whole.size() + 1));

  const HttpRequestHead early = sockecho::detail::parse_http_head(prefix);
  const HttpRequestHead late = sockecho::detail::parse_http_head(whole);
  check_head(early, prefix);
  check_head(late, whole);
  if (early.state == State::bad) SOCKECHO_FUZZ_CHECK(late.state == State::bad);
  if (early.state == State::complete) {
    SOCKECHO_FUZZ_CHECK(late.state == State::complete);
    SOCKECHO_FUZZ_CHECK(late.method.data() == early.method.data() &&
                        late.method.size() == early.method.size());
    SOCKECHO_FUZZ_CHECK(late.target.data() == early.target.data() &&
                        late.target.size() == early.target.size());
  }
  return 0;
}
