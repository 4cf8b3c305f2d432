// sockecho (private): how a failed system call ends a connection.
#pragma once

#include <cerrno>
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

}  // namespace sockecho::detail
