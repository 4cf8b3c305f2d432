// sockecho (private): what a program writes to its stdout or stderr, as log lines that no output
// can forge or flood. Used by --exec (stderr) and the job queue (stdout and stderr).
#pragma once

#include <cstddef>
#include <deque>
#include <limits>
#include <string>
#include <string_view>

#include "sockecho/log.hpp"
#include "sockecho/program.hpp"
#include "sockecho/record.hpp"

namespace sockecho::detail {

// One stream of one run: each line becomes `WHO STREAM="line"` (log_quoted(): no line of the
// program's can start a log line of its own), and the lines count against `budget` by what they
// cost in the log, timestamp and prefix included, so a flood of empty lines is as bounded as one
// of long ones. The first half of the budget goes out as the lines come; past it, the last lines
// that fit the other half are kept, and finish() writes one line saying how many were left out
// between, then those last ones.
class ProgramLog {
 public:
  // What a log line costs besides its text: the timestamp, a space, the newline.
  static constexpr std::size_t kLineOverhead = 26;

  ProgramLog(const Logger& log, std::string who, std::string_view stream, std::size_t budget)
      : log_(log),
        prefix_(std::move(who) + " " + std::string(stream) + "="),
        skipped_prefix_(prefix_.substr(0, prefix_.size() - 1) + "_skipped"),
        half_(budget / 2) {}

  void line(std::string_view text) {
    if (!log_.enabled(LogLevel::normal)) return;
    std::string entry = prefix_ + log_quoted(text);
    const std::size_t cost = entry.size() + kLineOverhead;
    if (tail_.empty() && head_ + cost <= half_) {
      head_ += cost;
      log_.output(entry);
      return;
    }
    tail_bytes_ += cost;
    tail_.push_back(std::move(entry));
    while (tail_bytes_ > half_ && !tail_.empty()) {
      tail_bytes_ -= tail_.front().size() + kLineOverhead;
      skipped_bytes_ += tail_.front().size() + kLineOverhead;
      ++skipped_;
      tail_.pop_front();
    }
  }

  // Writes what was kept for the end, after the line that counts what was left out.
  void finish() {
    if (skipped_ > 0) {
      log_.output(skipped_prefix_ + " lines=" + std::to_string(skipped_) +
                  " bytes=" + std::to_string(skipped_bytes_));
    }
    for (const std::string& entry : tail_) log_.output(entry);
    tail_.clear();
    tail_bytes_ = 0;
    skipped_ = 0;
  }

 private:
  const Logger& log_;
  std::string prefix_;          // "exec pid=4711 peer=127.0.0.1:40312 stderr="
  std::string skipped_prefix_;  // "exec pid=4711 peer=127.0.0.1:40312 stderr_skipped"
  std::size_t half_;
  std::size_t head_ = 0;
  std::deque<std::string> tail_;
  std::size_t tail_bytes_ = 0;
  std::size_t skipped_ = 0;
  std::size_t skipped_bytes_ = 0;
};

// Runs `program` with `input` under `limits`, its stderr lines logged as `WHO stderr="..."`
// within limits.max_log by what they cost in the log: Program's own count of stderr bytes is
// set aside, so that every line reaches the ProgramLog, which keeps the first and the last.
inline ProgramResult run_logged(Program& program, std::string_view input,
                                const ProgramLimits& limits, const Logger& log,
                                const std::string& who) {
  ProgramLimits every_line = limits;
  every_line.max_log = std::numeric_limits<std::size_t>::max();
  ProgramLog stderr_lines(log, who, "stderr", limits.max_log);
  ProgramResult result =
      program.run(input, every_line, [&](std::string_view line) { stderr_lines.line(line); });
  stderr_lines.finish();
  return result;
}

}  // namespace sockecho::detail
