// sockecho: what the server knows about a finished connection, and its one-line text.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/export.hpp"

namespace sockecho {

// How a connection ended.
enum class Outcome {
  ok,         // answered
  timeout,    // the peer stayed silent (or did not read) longer than the timeout
  too_large,  // the request (or line) exceeded the size limit; closed unanswered
  reset,      // the peer reset or went away mid-transfer
  refused,    // turned away at accept (a limit), or its job could not be queued
  failed,     // the program run for it failed (a non-zero exit or a signal)
  error,      // anything else, including a handler that threw
};

// Every outcome, in the order of the enum: counters indexed by outcome are sized from it.
inline constexpr std::array kOutcomes = {Outcome::ok,    Outcome::timeout, Outcome::too_large,
                                         Outcome::reset, Outcome::refused, Outcome::failed,
                                         Outcome::error};
inline constexpr std::size_t kOutcomeCount = kOutcomes.size();

[[nodiscard]] SOCKECHO_EXPORT std::string_view to_string(Outcome outcome) noexcept;

// What the server knows about a finished connection.
struct SOCKECHO_EXPORT ConnectionRecord {
  Address peer;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::chrono::microseconds duration{0};
  Outcome outcome = Outcome::ok;
  std::string_view reason;  // why it was refused ("per_source"), logged as reason=...
  std::string fields;       // key=value words after the outcome ("exit=3"), when any
  std::string detail;       // the error message, when there was one
};

// Text from outside (a program's output, a request's bytes, an error message that may carry
// them) as a log line's quoted value: "..." with '\\' and '"' escaped by a backslash, a control
// byte or an invalid UTF-8 byte as \xNN (\n, \r, \t by name), valid UTF-8 kept. Whatever the
// text, the value ends at its closing quote and the line at its newline: no input can start a
// line of its own or end the value early.
[[nodiscard]] SOCKECHO_EXPORT std::string log_quoted(std::string_view text);

// "conn peer=127.0.0.1:40312 in=6 out=16 ms=0.210 outcome=ok", without timestamp and newline.
[[nodiscard]] SOCKECHO_EXPORT std::string format_record(const ConnectionRecord& record);
// The same text written into out[0, capacity) without allocating: returns its length, or 0 when
// it does not fit (a long error message).
SOCKECHO_EXPORT std::size_t format_record(const ConnectionRecord& record, char* out,
                                          std::size_t capacity) noexcept;

}  // namespace sockecho
