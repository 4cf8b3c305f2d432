// sockecho: listening sockets handed over by a service manager (systemd's socket activation).
#pragma once

#include <optional>
#include <vector>

#include "sockecho/listener.hpp"

namespace sockecho {

// The first descriptor number a service manager passes sockets on (systemd's
// SD_LISTEN_FDS_START): the sockets are 3, 4, ... up to 3 + LISTEN_FDS - 1.
inline constexpr int kFirstInheritedFd = 3;

// Takes over the listening sockets passed to this process through the LISTEN_FDS protocol of
// systemd's socket activation (sd_listen_fds(3); implemented here, without libsystemd). They are
// meant for this process when LISTEN_PID holds its pid; then descriptors 3 to 3 + LISTEN_FDS - 1
// are returned in order, each adopted as a close-on-exec Listener whose interrupt() leaves the
// socket listening for the service manager. LISTEN_FDNAMES is not used.
//
// Returns an empty vector when LISTEN_PID is unset or names another process (its descriptors are
// then left alone). Either way LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the
// environment, so that child processes cannot take the sockets for theirs; as that changes the
// environment, call it before starting threads.
//
// Throws std::system_error: EINVAL for a malformed variable or a passed descriptor that is not a
// listening IPv4 or IPv6 TCP socket, EBADF for one that is not open. Every passed descriptor
// that is open is closed then.
[[nodiscard]] std::vector<Listener> inherited_listeners();

// For a daemon that serves one address: the single listening socket inherited_listeners()
// returns, or std::nullopt when none was passed. Throws std::system_error (EINVAL) when more than
// one was, after closing them all.
[[nodiscard]] std::optional<Listener> inherited_listener();

}  // namespace sockecho
