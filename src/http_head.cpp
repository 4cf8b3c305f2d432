#include "http_head.hpp"

#include <algorithm>
#include <cstddef>
#include <optional>

namespace sockecho::detail {

namespace {

bool is_token_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// The next line of `text` from `at` (without its CR LF or LF), advancing `at`; std::nullopt when
// no line end follows.
std::optional<std::string_view> next_line(std::string_view text, std::size_t& at) noexcept {
  const std::size_t end = text.find('\n', at);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view line = text.substr(at, end - at);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  at = end + 1;
  return line;
}

}  // namespace

HttpRequestHead parse_http_head(std::string_view text) noexcept {
  HttpRequestHead head;
  std::size_t at = 0;
  const std::optional<std::string_view> request_line = next_line(text, at);
  if (!request_line) {
    // Not even a line yet; but a start that cannot become a request line is bad at once.
    const std::size_t space = text.find(' ');
    const std::string_view method = text.substr(0, space);
    if (!std::all_of(method.begin(), method.end(), is_token_char)) {
      head.state = HttpRequestHead::State::bad;
    }
    return head;
  }
  const std::string_view line = *request_line;
  const std::size_t first = line.find(' ');
  const std::size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (second == std::string_view::npos || line.find(' ', second + 1) != std::string_view::npos) {
    head.state = HttpRequestHead::State::bad;
    return head;
  }
  const std::string_view method = line.substr(0, first);
  const std::string_view target = line.substr(first + 1, second - first - 1);
  const std::string_view version = line.substr(second + 1);
  const bool good_method =
      !method.empty() && std::all_of(method.begin(), method.end(), is_token_char);
  const bool good_target = !target.empty() && target.front() == '/' &&
                           std::none_of(target.begin(), target.end(), [](char c) {
                             return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
                           });
  const bool good_version = version == "HTTP/1.0" || version == "HTTP/1.1";
  if (!good_method || !good_target || !good_version) {
    head.state = HttpRequestHead::State::bad;
    return head;
  }
  for (;;) {
    const std::optional<std::string_view> header = next_line(text, at);
    if (!header) return head;  // incomplete
    if (header->empty()) break;
    const std::size_t colon = header->find(':');
    if (colon == 0 || colon == std::string_view::npos ||
        !std::all_of(header->begin(), header->begin() + static_cast<std::ptrdiff_t>(colon),
                     is_token_char)) {
      head.state = HttpRequestHead::State::bad;
      return head;
    }
  }
  head.state = HttpRequestHead::State::complete;
  head.method = method;
  head.target = target.substr(0, target.find('?'));
  return head;
}

}  // namespace sockecho::detail
