// sockecho: a listening stream socket, TCP or Unix-domain.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/export.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

struct SOCKECHO_EXPORT ListenOptions {
  // Queue of connections the kernel completes before accept() takes them.
  int backlog = SOMAXCONN;
  // SO_REUSEPORT: let several processes bind the same port and share its connections. Off by
  // default, so a second daemon started by mistake fails with "Address already in use".
  bool reuse_port = false;
};

// The socket file of a Unix-domain listener (Listener::bind_unix()).
struct SOCKECHO_EXPORT UnixOptions {
  // The file's permission bits, exactly (the umask does not apply): who may connect, since
  // connecting needs write permission on the file. 0660: the owner and the group.
  mode_t mode = 0660;
  // The file's group (php-fpm's listen.group), e.g. from find_group(); unset: the process's.
  std::optional<gid_t> group;
  int backlog = SOMAXCONN;
};

// The group id of a group name, or of a decimal gid. Throws std::invalid_argument for a group
// the system does not know ("unknown group 'nosuch'"), std::system_error if the lookup fails.
[[nodiscard]] SOCKECHO_EXPORT gid_t find_group(std::string_view name);

// A listening stream socket, TCP or Unix-domain. accept() may be called from several threads at
// once; interrupt(), from any thread, makes every blocked and later accept() return std::nullopt.
//
// A socket the Listener binds itself is its own: interrupt() shuts it down, which wakes every
// blocked accept() at once. An adopted socket (one inherited from a service manager such as
// systemd) is shared with its giver and must keep listening after this process is done with it,
// so interrupt() never touches it: accept() then waits in poll() on the socket together with an
// eventfd of the Listener's own, one thread at a time, and interrupt() signals the eventfd. Its
// options are left as they were given: the idle timeout is the poll's, not a socket option.
class SOCKECHO_EXPORT Listener {
 public:
  // Resolves host, then binds and listens on the first address that works (SO_REUSEADDR on,
  // close-on-exec). Port 0 picks a free port: read it back with address(). Throws
  // std::system_error, e.g. "bind 127.0.0.1:12387: Address already in use".
  [[nodiscard]] static Listener bind(std::string_view host, std::uint16_t port,
                                     const ListenOptions& options = {});

  // Binds and listens on a Unix-domain path (or an abstract "@name": see Address), close-on-exec.
  // Before binding, a socket file already at the path that nobody listens on (connecting to it is
  // refused: a crashed server's leftover) is removed; if a server listens there it throws
  // std::system_error EADDRINUSE ("bind unix:/run/x.sock: Address already in use"); anything
  // else at the path (a file, a directory) throws EEXIST and is left untouched. The file gets
  // options.mode and options.group before listen(), so no connection is ever accepted through
  // other permissions. The Listener owns the file: its destructor removes it, if the path still
  // names the socket it created. An abstract name has no file: mode and group do not apply.
  // Throws std::invalid_argument for a path Address::unix_path() rejects.
  [[nodiscard]] static Listener bind_unix(std::string_view path, const UnixOptions& options = {});

  // Adopts a stream socket that is already bound and listening, such as one inherited from a
  // service manager, and makes it close-on-exec. Throws std::system_error (EINVAL) if it is not a
  // listening IPv4, IPv6 or Unix-domain stream socket. An adopted Unix socket's file belongs to
  // its giver: it is never removed, replaced or chmod-ed. The socket is switched to non-blocking
  // mode, a flag its other holders share; the destructor puts the flag back as it found it.
  explicit Listener(Fd socket);

  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // The bound address, with the real port.
  [[nodiscard]] const Address& address() const noexcept { return address_; }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }

  // Waits for the next connection (close-on-exec, non-blocking, with no limits set). On a
  // Unix-domain socket the peer address carries the peer's Credentials.
  // Connections the peer aborted before they were taken are skipped. Returns std::nullopt once
  // interrupt() has been called. Throws std::system_error on other failures, e.g. EMFILE when
  // out of descriptors.
  [[nodiscard]] std::optional<Connection> accept();

  // How long accept_or_idle() waits before it reports an idle period; zero (the default) waits
  // however long it takes. Call it before accepting starts, not while other threads accept.
  void set_idle_timeout(std::chrono::milliseconds idle);
  [[nodiscard]] std::chrono::milliseconds idle_timeout() const noexcept { return idle_; }
  // Like accept(), but after an idle timeout without a connection it returns a Connection that
  // is not open (is_open() false), so the caller can tidy up while idle. std::nullopt still
  // means interrupt() was called.
  [[nodiscard]] std::optional<Connection> accept_or_idle();

  // Stops accepting: wakes every thread blocked in accept() and makes later calls return
  // std::nullopt. Safe from any thread. Connections still queued in the kernel are refused, except
  // on an adopted socket: there they stay queued for the socket's next user; and on Linux with
  // net.ipv4.tcp_migrate_req set, a SO_REUSEPORT socket's move to another socket of its group.
  void interrupt() noexcept;
  // True for a socket taken over with Listener(Fd).
  [[nodiscard]] bool adopted() const noexcept { return adopted_ != nullptr; }
  [[nodiscard]] bool interrupted() const noexcept {
    return interrupted_.load(std::memory_order_acquire);
  }

 private:
  Listener(Fd socket, const Address& address) noexcept;
  // An adopted socket's wait for a connection: false when the idle timeout passed first.
  bool wait_adopted();
  // The connection of a descriptor accept4() returned for `peer`.
  [[nodiscard]] Connection accepted(int fd, Address& peer) const;
  void give_back() noexcept;
  // Removes the socket file bind_unix() created, if the path still names it.
  void remove_file() noexcept;

  struct SOCKECHO_NO_EXPORT Adopted;
  // The socket file bind_unix() created: its path, and which file it is.
  struct OwnedFile {
    std::string path;
    dev_t device = 0;
    ino_t inode = 0;
  };

  Fd socket_;
  Address address_;
  std::chrono::milliseconds idle_{0};
  std::atomic<bool> interrupted_{false};
  std::unique_ptr<Adopted> adopted_;  // only for an adopted socket
  std::optional<OwnedFile> file_;     // only for a Unix socket bound at a path by bind_unix()
};

}  // namespace sockecho
