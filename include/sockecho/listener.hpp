// sockecho: a listening TCP socket.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
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
  // Every accepted connection starts with this limit on each read and write
  // (Connection::timeout() reports it); zero means none. Set on the listening socket before
  // listen(), so each connection inherits it from there (Linux copies SO_RCVTIMEO and
  // SO_SNDTIMEO to accepted sockets) instead of costing two system calls of its own.
  std::chrono::milliseconds connection_timeout{0};
};

// A listening TCP socket. accept() may be called from several threads at once; interrupt(), from
// any thread, makes every blocked and later accept() return std::nullopt.
class Listener {
 public:
  // Resolves host, then binds and listens on the first address that works (SO_REUSEADDR on,
  // close-on-exec). Port 0 picks a free port: read it back with address(). Throws
  // std::system_error, e.g. "bind 127.0.0.1:12387: Address already in use".
  [[nodiscard]] static Listener bind(std::string_view host, std::uint16_t port,
                                     const ListenOptions& options = {});

  // Adopts a socket that is already bound and listening, such as one inherited from a service
  // manager. Throws std::system_error if it is not a listening stream socket.
  explicit Listener(Fd socket);

  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() = default;

  // The bound address, with the real port.
  [[nodiscard]] const Address& address() const noexcept { return address_; }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }

  // Waits for the next connection (close-on-exec, blocking). Connections the peer aborted before
  // they were taken are skipped. Returns std::nullopt once interrupt() has been called. Throws
  // std::system_error on other failures, e.g. EMFILE when out of descriptors.
  [[nodiscard]] std::optional<Connection> accept();

  // The timeout every accepted connection starts with (ListenOptions::connection_timeout).
  [[nodiscard]] std::chrono::milliseconds connection_timeout() const noexcept {
    return connection_timeout_;
  }
  // Like accept(), but with a connection timeout it also returns when that long passes without
  // a connection: then with a Connection that is not open (is_open() false), so the caller can
  // tidy up while idle. std::nullopt still means interrupt() was called.
  [[nodiscard]] std::optional<Connection> accept_or_idle();

  // Stops accepting: wakes every thread blocked in accept() and makes later calls return
  // std::nullopt. Connections still queued in the kernel are refused. Safe from any thread.
  void interrupt() noexcept;
  [[nodiscard]] bool interrupted() const noexcept {
    return interrupted_.load(std::memory_order_acquire);
  }

 private:
  Listener(Fd socket, const Address& address, std::chrono::milliseconds timeout) noexcept;

  Fd socket_;
  Address address_;
  std::chrono::milliseconds connection_timeout_{0};
  std::atomic<bool> interrupted_{false};
};

}  // namespace sockecho
