#include "sockecho/log.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace sockecho {

std::string_view to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::ok:
      return "ok";
    case Outcome::timeout:
      return "timeout";
    case Outcome::too_large:
      return "too_large";
    case Outcome::reset:
      return "reset";
    case Outcome::error:
      return "error";
  }
  return "error";
}

namespace {

// Decimal digits of v into out (which has room for 20); returns the count.
std::size_t format_decimal(std::uint64_t v, char* out) noexcept {
  std::array<char, 20> reversed{};
  std::size_t n = 0;
  do {
    reversed[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (std::size_t i = 0; i < n; ++i) out[i] = reversed[n - 1 - i];
  return n;
}

// One log line built in a fixed array, so the line written for every connection allocates
// nothing. A line that does not fit (a long error message) is marked overflowed.
class LineBuffer {
 public:
  void append(std::string_view text) noexcept {
    if (text.size() > data_.size() - size_) {
      overflowed_ = true;
      return;
    }
    std::memcpy(data_.data() + size_, text.data(), text.size());
    size_ += text.size();
  }
  void append(char c) noexcept { append(std::string_view(&c, 1)); }
  [[nodiscard]] std::string_view view() const noexcept { return {data_.data(), size_}; }
  [[nodiscard]] bool overflowed() const noexcept { return overflowed_; }

 private:
  std::array<char, 512> data_{};
  std::size_t size_ = 0;
  bool overflowed_ = false;
};

// A std::string used where format_record() wants a sink.
class StringSink {
 public:
  explicit StringSink(std::string& out) noexcept : out_(out) {}
  void append(std::string_view text) { out_ += text; }
  void append(char c) { out_ += c; }

 private:
  std::string& out_;
};

template <typename Sink>
void append_decimal(Sink& sink, std::uint64_t value) {
  std::array<char, 20> digits{};
  sink.append(std::string_view(digits.data(), format_decimal(value, digits.data())));
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

// "conn peer=127.0.0.1:40312 in=6 out=16 ms=0.210 outcome=ok"
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
  if (!record.detail.empty()) {
    sink.append(" error=\"");
    sink.append(record.detail);
    sink.append('"');
  }
}

// "2026-11-25T21:48:35.692Z ": the date and time are formatted once a second per thread, the
// milliseconds every time.
void append_timestamp(LineBuffer& line) noexcept {
  thread_local time_t cached_second = -1;
  thread_local std::array<char, 24> cached{};  // "2026-11-25T21:48:35."
  thread_local std::size_t cached_size = 0;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  if (now.tv_sec != cached_second) {
    tm utc{};
    ::gmtime_r(&now.tv_sec, &utc);
    const int n = std::snprintf(cached.data(), cached.size(), "%04d-%02d-%02dT%02d:%02d:%02d.",
                                utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                                utc.tm_min, utc.tm_sec);
    cached_size = n > 0 ? std::min(static_cast<std::size_t>(n), cached.size() - 1) : 0;
    cached_second = now.tv_sec;
  }
  line.append(std::string_view(cached.data(), cached_size));
  const auto ms = static_cast<unsigned>(now.tv_nsec / 1000000);
  const std::array<char, 5> tail = {static_cast<char>('0' + ms / 100),
                                    static_cast<char>('0' + ms / 10 % 10),
                                    static_cast<char>('0' + ms % 10), 'Z', ' '};
  line.append(std::string_view(tail.data(), tail.size()));
}

}  // namespace

std::string format_record(const ConnectionRecord& record) {
  std::string line;
  StringSink sink(line);
  append_record(sink, record);
  return line;
}

void Logger::connection(const ConnectionRecord& record) const noexcept {
  if (!enabled(LogLevel::normal)) return;
  LineBuffer line;
  append_timestamp(line);
  append_record(line, record);
  line.append('\n');
  if (!line.overflowed()) {
    // One write per line keeps lines whole. A failed log write (stderr closed, disk full) must
    // not take a connection down, so its result is deliberately ignored.
    (void)::write(fd_, line.view().data(), line.view().size());
    return;
  }
  try {
    write_line(format_record(record));
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop the line
  }
}

void Logger::event(LogLevel level, std::string_view text) const noexcept {
  if (enabled(level)) write_line(text);
}

void Logger::write_line(std::string_view text) const noexcept {
  LineBuffer stamp;
  append_timestamp(stamp);
  std::array<iovec, 3> parts{};
  parts[0] = {const_cast<char*>(stamp.view().data()), stamp.view().size()};
  parts[1] = {const_cast<char*>(text.data()), text.size()};
  parts[2] = {const_cast<char*>("\n"), 1};
  // As above: one writev per line, its result deliberately ignored.
  (void)::writev(fd_, parts.data(), static_cast<int>(parts.size()));
}

}  // namespace sockecho
