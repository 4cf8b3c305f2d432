// sockecho: a listening TCP socket.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

struct ListenOptions {
  // Queue of connections the kernel completes before accept() takes them.
  int backlog = SOMAXCONN;
  // SO_REUSEPORT: let several processes bind the same port and share its connections. Off by
  // default, so a second daemon started by mistake fails with "Address already in use".
  bool reuse_port = false;
};

// A listening TCP socket. accept() may be called from several threads at once; interrupt(), from
// any thread, makes every blocked and later accept() return std::nullopt.
//
// A socket the Listener binds itself is its own: interrupt() shuts it down, which wakes every
// blocked accept() at once. An adopted socket (one inherited from a service manager such as
// systemd) is shared with its giver and must keep listening after this process is done with it,
// so interrupt() never touches it: accept() then waits in poll() on the socket together with an
// eventfd of the Listener's own, one thread at a time, and interrupt() signals the eventfd. Its
// options are left as they were given: the idle timeout is the poll's, not a socket option.
class Listener {
 public:
  // Resolves host, then binds and listens on the first address that works (SO_REUSEADDR on,
  // close-on-exec). Port 0 picks a free port: read it back with address(). Throws
  // std::system_error, e.g. "bind 127.0.0.1:12387: Address already in use".
  [[nodiscard]] static Listener bind(std::string_view host, std::uint16_t port,
                                     const ListenOptions& options = {});

  // Adopts a TCP socket that is already bound and listening, such as one inherited from a service
  // manager, and makes it close-on-exec. Throws std::system_error (EINVAL) if it is not a
  // listening IPv4 or IPv6 stream socket. The socket is switched to non-blocking mode, a flag its
  // other holders share; the destructor puts the flag back as it found it.
  explicit Listener(Fd socket);

  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // The bound address, with the real port.
  [[nodiscard]] const Address& address() const noexcept { return address_; }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }

  // Waits for the next connection (close-on-exec, non-blocking, with no limits set).
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
  void give_back() noexcept;

  struct Adopted;

  Fd socket_;
  Address address_;
  std::chrono::milliseconds idle_{0};
  std::atomic<bool> interrupted_{false};
  std::unique_ptr<Adopted> adopted_;  // only for an adopted socket
};

}  // namespace sockecho
