#include "sockecho/listener.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "sockecho/error.hpp"

namespace sockecho {

namespace {

void set_flag(int fd, int option, const Address& address, const char* name) {
  const int on = 1;
  if (::setsockopt(fd, SOL_SOCKET, option, &on, sizeof on) != 0) {
    throw os_error(errno, std::string("setsockopt ") + name + " " + address.to_string());
  }
}

Fd listen_on(const Address& address, const ListenOptions& options) {
  Fd socket(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) throw os_error(errno, "socket " + address.to_string());
  set_flag(socket.get(), SO_REUSEADDR, address, "SO_REUSEADDR");
  if (options.reuse_port) set_flag(socket.get(), SO_REUSEPORT, address, "SO_REUSEPORT");
  if (options.connection_timeout.count() > 0) {
    const auto ms = options.connection_timeout.count();
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
    for (const auto& [option, name] :
         {std::pair{SO_RCVTIMEO, "SO_RCVTIMEO"}, std::pair{SO_SNDTIMEO, "SO_SNDTIMEO"}}) {
      if (::setsockopt(socket.get(), SOL_SOCKET, option, &tv, sizeof tv) != 0) {
        throw os_error(errno, std::string("setsockopt ") + name + " " + address.to_string());
      }
    }
  }
  if (::bind(socket.get(), address.data(), address.size()) != 0) {
    throw os_error(errno, "bind " + address.to_string());
  }
  if (::listen(socket.get(), options.backlog) != 0) {
    throw os_error(errno, "listen " + address.to_string());
  }
  return socket;
}

// accept() failures that concern one connection, not the listener: skip it and take the next
// (the list of accept(2)'s "Error handling" section).
bool skippable(int err) noexcept {
  switch (err) {
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
      return true;
    default:
      return false;
  }
}

}  // namespace

Listener Listener::bind(std::string_view host, std::uint16_t port, const ListenOptions& options) {
  std::exception_ptr first_error;
  for (const Address& candidate : resolve(host, port, /*passive=*/true)) {
    try {
      Fd socket = listen_on(candidate, options);
      const Address bound = Address::local_of(socket.get());
      return {std::move(socket), bound,
              std::max(options.connection_timeout, std::chrono::milliseconds(0))};
    } catch (const std::system_error&) {
      if (!first_error) first_error = std::current_exception();
    }
  }
  // resolve() returned at least one address, so at least one attempt failed.
  std::rethrow_exception(first_error);
}

Listener::Listener(Fd socket, const Address& address, std::chrono::milliseconds timeout) noexcept
    : socket_(std::move(socket)), address_(address), connection_timeout_(timeout) {}

Listener::Listener(Fd socket) : socket_(std::move(socket)) {
  const int fd = socket_.get();
  int accepting = 0;
  socklen_t len = sizeof accepting;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0) {
    throw os_error(errno, "getsockopt SO_ACCEPTCONN fd " + std::to_string(fd));
  }
  if (accepting == 0) throw os_error(EINVAL, "adopt fd " + std::to_string(fd) + " (not listening)");
  address_ = Address::local_of(fd);
  // An inherited descriptor may lack close-on-exec and may be non-blocking; make it like ours.
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) throw os_error(errno, "fcntl " + address_.to_string());
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    throw os_error(errno, "fcntl " + address_.to_string());
  }
}

Listener::Listener(Listener&& other) noexcept
    : socket_(std::move(other.socket_)),
      address_(other.address_),
      connection_timeout_(other.connection_timeout_),
      interrupted_(other.interrupted_.load()) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  socket_ = std::move(other.socket_);
  address_ = other.address_;
  connection_timeout_ = other.connection_timeout_;
  interrupted_.store(other.interrupted_.load());
  return *this;
}

std::optional<Connection> Listener::accept() {
  for (;;) {
    std::optional<Connection> next = accept_or_idle();
    if (!next || next->is_open()) return next;
  }
}

std::optional<Connection> Listener::accept_or_idle() {
  for (;;) {
    if (interrupted()) return std::nullopt;
    Address peer;
    socklen_t len = Address::capacity();
    const int fd = ::accept4(socket_.get(), peer.data(), &len, SOCK_CLOEXEC);
    if (fd >= 0) {
      peer.set_size(len);
      return Connection(Fd(fd), peer, connection_timeout_);
    }
    const int err = errno;
    if (interrupted()) return std::nullopt;
    if (err == EINTR || skippable(err)) continue;
    // SO_RCVTIMEO on the listening socket bounds accept() too: nothing arrived in that time.
    if (err == EAGAIN || err == EWOULDBLOCK) return Connection();
    throw os_error(err, "accept " + address_.to_string());
  }
}

void Listener::interrupt() noexcept {
  interrupted_.store(true, std::memory_order_release);
  // On Linux, shutting down a listening socket wakes every thread blocked in accept() on it
  // (with EINVAL): the same effect as closing Go's listener, without the fd-reuse race of close().
  ::shutdown(socket_.get(), SHUT_RDWR);
}

}  // namespace sockecho
