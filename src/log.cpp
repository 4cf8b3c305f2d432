// The Logger's lines: each stamped and built without allocating, then written with one writev()
// of its own, or handed to the writer thread of a batching Logger (log_batch.cpp).
#include "sockecho/log.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <string>

#include "log_batch.hpp"
#include "log_line.hpp"

namespace sockecho {

namespace detail {

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

}  // namespace detail

using detail::append_timestamp;
using detail::LineBuffer;

void Logger::connection(const ConnectionRecord& record) const noexcept {
  if (!enabled(LogLevel::normal)) return;
  LineBuffer line;
  append_timestamp(line);
  line.append(record);
  line.append('\n');
  if (!line.overflowed()) {
    emit({line.view()});
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

void Logger::output(std::string_view text) const noexcept {
  if (enabled(LogLevel::normal)) write_line(text, /*output=*/true);
}

void Logger::flush() const noexcept {
  if (batch_) batch_->flush();
}

void Logger::write_line(std::string_view text, bool output) const noexcept {
  LineBuffer stamp;
  append_timestamp(stamp);
  emit({stamp.view(), text, "\n"}, output);
}

void Logger::emit(std::initializer_list<std::string_view> pieces, bool output) const noexcept {
  if (batch_) {
    batch_->add(pieces, output);
    return;
  }
  std::array<iovec, 4> parts{};
  std::size_t used = 0;
  for (const std::string_view piece : pieces) {
    if (used == parts.size()) break;
    parts[used++] = {const_cast<char*>(piece.data()), piece.size()};
  }
  // One writev per line keeps lines whole. A failed log write (stderr closed, disk full) must not
  // take a connection down, so its result is deliberately ignored.
  (void)::writev(fd_, parts.data(), static_cast<int>(used));
}

}  // namespace sockecho
