// sockecho: the daemon's log lines.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "sockecho/export.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

enum class LogLevel {
  quiet,    // problems only (e.g. out of descriptors)
  normal,   // plus start, stop and one line per connection
  verbose,  // plus a line when each connection opens
};

// Writes timestamped, single-line, key=value events to a descriptor, each with one write() so
// lines from concurrent workers never interleave. Copyable; it does not own the descriptor.
// A default-constructed Logger is quiet and writes nowhere.
class SOCKECHO_EXPORT Logger {
 public:
  Logger() noexcept = default;
  // Writes each line at once, with one write() of its own.
  Logger(int fd, LogLevel level) noexcept : fd_(fd), level_(level) {}

  static constexpr std::size_t kDefaultLogCapacity = std::size_t{1} << 20;

  // A Logger that collects lines and writes them from a thread of its own, many in one write(),
  // at most `delay` after they are logged: a busy server then pays for a log line with a copy,
  // not a system call. At most `capacity` bytes wait; lines beyond that are dropped and counted
  // in a later line, so a log reader that stalls (a full pipe) never stalls the server. Copies
  // share the thread; the last copy to go writes what is left (giving a stalled reader about a
  // second) and joins it. The thread blocks every signal, so it may start before or after
  // StopOnSignals. With fd < 0, or at quiet level (whose rare lines are then written at once),
  // no thread starts. Throws std::system_error if the thread cannot start.
  [[nodiscard]] static Logger batched(int fd, LogLevel level, std::chrono::milliseconds delay,
                                      std::size_t capacity = kDefaultLogCapacity);

  [[nodiscard]] bool enabled(LogLevel level) const noexcept {
    return fd_ >= 0 && static_cast<int>(level) <= static_cast<int>(level_);
  }
  // "conn peer=127.0.0.1:40312 in=6 out=16 ms=0.210 outcome=ok", at normal level.
  void connection(const ConnectionRecord& record) const noexcept;
  // A free-form event line at the given level.
  void event(LogLevel level, std::string_view text) const noexcept;
  // A line of a program's output, at normal level (the caller quotes what the program wrote; see
  // log_quoted()). A batched logger gives such lines a share of their own, half its capacity, so a
  // flood of output is dropped before it can take the room of any other line.
  void output(std::string_view text) const noexcept;
  // Writes every line logged so far before it returns (a batched logger's writer hurries; a
  // stalled reader gets about a second): for a process about to end without its destructors,
  // as a second stop signal ends it. Nothing to do for a logger that writes each line at once.
  void flush() const noexcept;

 private:
  class SOCKECHO_NO_EXPORT Batch;
  void write_line(std::string_view text, bool output = false) const noexcept;
  // Writes, or queues, one whole line made of these pieces.
  void emit(std::initializer_list<std::string_view> pieces, bool output = false) const noexcept;

  int fd_ = -1;
  LogLevel level_ = LogLevel::quiet;
  std::shared_ptr<Batch> batch_;
};

}  // namespace sockecho
