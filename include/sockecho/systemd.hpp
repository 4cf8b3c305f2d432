// sockecho: listening sockets handed over by a service manager (systemd's socket activation).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/listener.hpp"

namespace sockecho {

// The first descriptor number a service manager passes sockets on (systemd's
// SD_LISTEN_FDS_START): the sockets are 3, 4, ... up to 3 + LISTEN_FDS - 1.
inline constexpr int kFirstInheritedFd = 3;

// The name a passed socket has when the service manager gave it none (LISTEN_FDNAMES unset or
// empty, or an empty name in it): the name sd_listen_fds_with_names(3) gives every socket when
// LISTEN_FDNAMES is unset.
inline constexpr const char* kUnnamedSocket = "unknown";

// The name of the socket a daemon with a status listener serves it on: a socket unit's
// FileDescriptorName=status.
inline constexpr const char* kStatusSocketName = "status";

// Takes over the listening sockets passed to this process through the LISTEN_FDS protocol of
// systemd's socket activation (sd_listen_fds(3); implemented here, without libsystemd). They are
// meant for this process when LISTEN_PID holds its pid; then descriptors 3 to 3 + LISTEN_FDS - 1
// are returned in order, each adopted as a close-on-exec Listener whose interrupt() leaves the
// socket listening for the service manager. LISTEN_FDNAMES is not read here (as sd_listen_fds()
// does not read it): see inherited_named_listeners().
//
// Returns an empty vector when LISTEN_PID is unset or names another process (its descriptors are
// then left alone). Either way LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the
// environment, so that child processes cannot take the sockets for theirs; as that changes the
// environment, call it before starting threads.
//
// Throws std::system_error: EINVAL for a malformed variable or a passed descriptor that is not a
// listening IPv4, IPv6 or Unix-domain stream socket (a Unix socket's address is its path, and
// its file stays the service manager's: see Listener(Fd)), EBADF for one that is not open. Every
// passed descriptor that is open is closed then.
[[nodiscard]] SOCKECHO_EXPORT std::vector<Listener> inherited_listeners();

// For a daemon that serves one address: the single listening socket inherited_listeners()
// returns, or std::nullopt when none was passed. Throws std::system_error (EINVAL) when more than
// one was, after closing them all.
[[nodiscard]] SOCKECHO_EXPORT std::optional<Listener> inherited_listener();

// A passed socket and the name the service manager gave it.
struct SOCKECHO_EXPORT NamedListener {
  std::string name;
  Listener listener;
};

// Every passed socket with its name, in order: inherited_listeners(), with LISTEN_FDNAMES read
// as sd_listen_fds_with_names(3) reads it. It holds one name per passed descriptor, separated by
// colons; systemd names a socket after its unit's FileDescriptorName=, by default the socket
// unit's name ("sockecho.socket"). The names may be missing: with LISTEN_FDNAMES unset or empty
// every socket is named kUnnamedSocket ("unknown"), and so is one whose name is empty ("a::b").
// Names present in a number other than LISTEN_FDS are malformed: std::system_error EINVAL naming
// the variable, after closing every passed descriptor. Otherwise the same rules and failures as
// inherited_listeners().
[[nodiscard]] SOCKECHO_EXPORT std::vector<NamedListener> inherited_named_listeners();

// What a daemon with a main listener and, optionally, a status listener takes over.
struct SOCKECHO_EXPORT InheritedSockets {
  std::optional<Listener> main;    // the one socket not named "status", if one was passed
  std::optional<Listener> status;  // the socket named "status", if one was passed
};

// The sockets of inherited_named_listeners() for such a daemon: the one not named "status"
// (kStatusSocketName), whatever its name (the main socket unit's FileDescriptorName=, or its
// default name), and the one named "status". Either may be missing; none passed gives two empty
// members. Throws std::system_error EINVAL, after closing every passed descriptor, when more than
// one socket is not named "status" (naming each) or more than one is named so.
[[nodiscard]] SOCKECHO_EXPORT InheritedSockets inherited_sockets();

}  // namespace sockecho
