#include "sockecho/log.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstdio>
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

std::string format_record(const ConnectionRecord& record) {
  std::array<char, 160> numbers{};
  const auto us = static_cast<unsigned long long>(record.duration.count());
  (void)std::snprintf(numbers.data(), numbers.size(), " in=%llu out=%llu ms=%llu.%03llu outcome=",
                      static_cast<unsigned long long>(record.bytes_in),
                      static_cast<unsigned long long>(record.bytes_out), us / 1000, us % 1000);
  std::string line = "conn peer=" + record.peer.to_string();
  line += numbers.data();
  line += to_string(record.outcome);
  if (!record.detail.empty()) {
    line += " error=\"";
    line += record.detail;
    line += '"';
  }
  return line;
}

void Logger::connection(const ConnectionRecord& record) const noexcept {
  if (!enabled(LogLevel::normal)) return;
  try {
    write_line(format_record(record));
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop the line
  }
}

void Logger::event(LogLevel level, std::string_view text) const noexcept {
  if (enabled(level)) write_line(text);
}

void Logger::write_line(std::string_view text) const noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  std::array<char, 32> stamp{};
  const int n = std::snprintf(stamp.data(), stamp.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
                              utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                              utc.tm_min, utc.tm_sec, now.tv_nsec / 1000000);
  std::array<iovec, 3> parts{};
  parts[0] = {stamp.data(), static_cast<std::size_t>(n > 0 ? n : 0)};
  parts[1] = {const_cast<char*>(text.data()), text.size()};
  parts[2] = {const_cast<char*>("\n"), 1};
  // One writev per line keeps lines whole. A failed log write (stderr closed, disk full) must
  // not take a connection down, so its result is deliberately ignored.
  (void)::writev(fd_, parts.data(), static_cast<int>(parts.size()));
}

}  // namespace sockecho
