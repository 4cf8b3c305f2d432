#include "sockecho/record.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <charconv>
#include <cstring>

namespace sockecho {

namespace {

// Indexed by Outcome, in the order of kOutcomes.
constexpr std::array<std::string_view, kOutcomeCount> kOutcomeNames = {
    "ok", "timeout", "too_large", "reset", "refused", "failed", "error"};

}  // namespace

std::string_view to_string(Outcome outcome) noexcept {
  return kOutcomeNames[static_cast<std::size_t>(outcome)];
}

namespace {

// Fixed room that a record is written into; a record that does not fit marks it overflowed.
class FixedSink {
 public:
  FixedSink(char* out, std::size_t capacity) noexcept : out_(out), capacity_(capacity) {}
  void append(std::string_view text) noexcept {
    if (overflowed_ || text.size() > capacity_ - size_) {
      overflowed_ = true;
      return;
    }
    std::memcpy(out_ + size_, text.data(), text.size());
    size_ += text.size();
  }
  void append(char c) noexcept { append(std::string_view(&c, 1)); }
  [[nodiscard]] std::size_t size() const noexcept { return overflowed_ ? 0 : size_; }

 private:
  char* out_;
  std::size_t capacity_;
  std::size_t size_ = 0;
  bool overflowed_ = false;
};

class StringSink {
 public:
  explicit StringSink(std::string& out) noexcept : out_(out) {}
  void append(std::string_view text) { out_ += text; }
  void append(char c) { out_ += c; }

 private:
  std::string& out_;
};

// The length of the valid UTF-8 sequence that starts text, or 0 (RFC 3629: no overlong forms,
// no surrogates, nothing past U+10FFFF).
std::size_t utf8_length(std::string_view text) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return length;
}

template <typename Sink>
void append_quoted(Sink& sink, std::string_view text) {
  static constexpr std::string_view kHex = "0123456789abcdef";
  sink.append('"');
  std::size_t at = 0;
  while (at < text.size()) {
    const auto c = static_cast<unsigned char>(text[at]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      std::size_t end = at + 1;  // a run of plain bytes in one append
      while (end < text.size()) {
        const auto next = static_cast<unsigned char>(text[end]);
        if (next < 0x20 || next >= 0x7f || next == '"' || next == '\\') break;
        ++end;
      }
      sink.append(text.substr(at, end - at));
      at = end;
      continue;
    }
    if (const std::size_t length = c >= 0x80 ? utf8_length(text.substr(at)) : 0; length > 0) {
      sink.append(text.substr(at, length));
      at += length;
      continue;
    }
    sink.append('\\');
    if (c == '"' || c == '\\') {
      sink.append(static_cast<char>(c));
    } else if (c == '\n') {
      sink.append('n');
    } else if (c == '\r') {
      sink.append('r');
    } else if (c == '\t') {
      sink.append('t');
    } else {
      sink.append('x');
      sink.append(kHex[c >> 4]);
      sink.append(kHex[c & 0xf]);
    }
    ++at;
  }
  sink.append('"');
}

template <typename Sink>
void append_decimal(Sink& sink, std::uint64_t value) {
  std::array<char, 20> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), value).ptr;
  sink.append(std::string_view(digits.data(), static_cast<std::size_t>(end - digits.data())));
}

template <typename Sink>
void append_peer(Sink& sink, const Address& peer) {
  if (peer.family() != AF_INET) {
    sink.append(peer.to_string());
    return;
  }
  // The common case by hand: Address::to_string() builds std::strings, and glibc's inet_ntop
  // formats IPv4 with sprintf.
  const auto* in = reinterpret_cast<const sockaddr_in*>(peer.data());
  const std::uint32_t host = ntohl(in->sin_addr.s_addr);
  for (int shift = 24; shift >= 0; shift -= 8) {
    append_decimal(sink, (host >> shift) & 0xffU);
    sink.append(shift > 0 ? '.' : ':');
  }
  append_decimal(sink, peer.port());
}

template <typename Sink>
void append_record(Sink& sink, const ConnectionRecord& record) {
  const auto us = static_cast<std::uint64_t>(record.duration.count());
  sink.append("conn peer=");
  append_peer(sink, record.peer);
  sink.append(" in=");
  append_decimal(sink, record.bytes_in);
  sink.append(" out=");
  append_decimal(sink, record.bytes_out);
  sink.append(" ms=");
  append_decimal(sink, us / 1000);
  const auto frac = static_cast<unsigned>(us % 1000);
  const std::array<char, 4> millis = {'.', static_cast<char>('0' + frac / 100),
                                      static_cast<char>('0' + frac / 10 % 10),
                                      static_cast<char>('0' + frac % 10)};
  sink.append(std::string_view(millis.data(), millis.size()));
  sink.append(" outcome=");
  sink.append(to_string(record.outcome));
  if (!record.reason.empty()) {
    sink.append(" reason=");
    sink.append(record.reason);
  }
  if (!record.fields.empty()) {
    sink.append(" ");
    sink.append(record.fields);
  }
  if (!record.detail.empty()) {
    sink.append(" error=");
    append_quoted(sink, record.detail);
  }
}

}  // namespace

std::string log_quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  StringSink sink(out);
  append_quoted(sink, text);
  return out;
}

std::string format_record(const ConnectionRecord& record) {
  std::string line;
  StringSink sink(line);
  append_record(sink, record);
  return line;
}

std::size_t format_record(const ConnectionRecord& record, char* out,
                          std::size_t capacity) noexcept {
  FixedSink sink(out, capacity);
  // An IPv6 peer goes through Address::to_string(), which allocates and may throw.
  try {
    append_record(sink, record);
  } catch (...) {
    return 0;
  }
  return sink.size();
}

}  // namespace sockecho
