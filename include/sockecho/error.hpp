// sockecho: how failures are reported.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

#include "sockecho/export.hpp"

namespace sockecho {

// A std::system_error in the errno category whose what() reads "<what>: <strerror(err)>", e.g.
// "bind 127.0.0.1:12387: Address already in use". `what` names the operation and the address.
[[nodiscard]] SOCKECHO_EXPORT std::system_error os_error(int err, const std::string& what);

// The category of getaddrinfo() failures (EAI_* codes, messages from gai_strerror).
[[nodiscard]] SOCKECHO_EXPORT const std::error_category& resolver_category() noexcept;

// Calls `call` again while it fails with EINTR: sockecho's EINTR policy for calls that can simply
// be made again. A wait, whose time must not start over, is poll_until() (deadline.hpp).
template <typename Call>
auto retry_eintr(Call call) -> decltype(call()) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

}  // namespace sockecho
