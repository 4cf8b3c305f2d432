// sockecho (private): socket options that more than one unit sets or reads.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <optional>

#include "sockecho/address.hpp"

namespace sockecho::detail {

// A duration as SO_RCVTIMEO and SO_SNDTIMEO take it.
inline timeval to_timeval(std::chrono::microseconds duration) noexcept {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(duration.count() / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(duration.count() % 1000000);
  return tv;
}

// Who is at the other end of a connected Unix-domain socket, as the kernel recorded it when the
// connection was made (SO_PEERCRED); nullopt when it cannot say (another family, say).
inline std::optional<Credentials> peer_credentials_of(int fd) noexcept {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return Credentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace sockecho::detail
