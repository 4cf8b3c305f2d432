// sockecho (private): how a connection ends: the outcome of a failed system call, and the
// words of a limit that ended it.
#pragma once

#include <cerrno>
#include <cstddef>
#include <string>
#include <system_error>

#include "sockecho/record.hpp"

namespace sockecho::detail {

// The outcome of a connection ended by a std::system_error of `code`: a limit that ran out is a
// timeout, a peer that went away a reset, EMSGSIZE too_large; anything else an error.
inline Outcome classify(const std::error_code& code) noexcept {
  if (code.category() != std::generic_category()) return Outcome::error;
  switch (code.value()) {
    case ETIMEDOUT:
      return Outcome::timeout;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      return Outcome::reset;
    case EMSGSIZE:
      return Outcome::too_large;
    default:
      return Outcome::error;
  }
}

// The detail of a request ended too_large by the request limit (`max_bytes`), and by the memory
// all requests held at once may take (`max_total_bytes`, `limit` bytes).
inline std::string over_max_bytes(std::size_t max_bytes) {
  return "request over " + std::to_string(max_bytes) + " bytes";
}
inline std::string over_max_total_bytes(std::size_t limit) {
  return "requests held at once over " + std::to_string(limit) + " bytes (max_total_bytes)";
}

}  // namespace sockecho::detail
