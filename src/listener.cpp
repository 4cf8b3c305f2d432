#include "sockecho/listener.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <exception>
#include <mutex>
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

// One accept4(): a close-on-exec descriptor with its peer filled in, or -1 with errno set.
int accept_one(int listener, Address& peer) noexcept {
  socklen_t len = Address::capacity();
  const int fd = ::accept4(listener, peer.data(), &len, SOCK_CLOEXEC);
  if (fd >= 0) peer.set_size(len);
  return fd;
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

// What an adopted socket needs besides the socket itself.
struct Listener::Adopted {
  Fd wake;                 // an eventfd, readable once interrupt() has been called
  std::mutex accepting;    // one thread waits in poll() at a time; the others wait here
  int original_flags = 0;  // the socket's file status flags as they were found
};

Listener::Listener(Fd socket, const Address& address, std::chrono::milliseconds timeout) noexcept
    : socket_(std::move(socket)), address_(address), connection_timeout_(timeout) {}

Listener::Listener(Fd socket) : socket_(std::move(socket)) {
  const int fd = socket_.get();
  const std::string name = "adopt fd " + std::to_string(fd);
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) throw os_error(errno, name);
  int accepting = 0;
  len = sizeof accepting;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0) {
    throw os_error(errno, name);
  }
  if (type != SOCK_STREAM || accepting == 0) {
    throw os_error(EINVAL, name + " (not a listening stream socket)");
  }
  address_ = Address::local_of(fd);
  if (address_.family() != AF_INET && address_.family() != AF_INET6) {
    throw os_error(EINVAL, name + " (not an IPv4 or IPv6 socket)");
  }
  auto adopted = std::make_unique<Adopted>();
  adopted->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!adopted->wake) throw os_error(errno, "eventfd " + address_.to_string());
  // An inherited descriptor may lack close-on-exec; make it like ours.
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) throw os_error(errno, "fcntl " + address_.to_string());
  // Non-blocking, so that a thread woken by poll() never blocks in accept() when another process
  // sharing the socket took the connection first.
  adopted->original_flags = ::fcntl(fd, F_GETFL);
  if (adopted->original_flags < 0 ||
      ::fcntl(fd, F_SETFL, adopted->original_flags | O_NONBLOCK) != 0) {
    throw os_error(errno, "fcntl " + address_.to_string());
  }
  adopted_ = std::move(adopted);
}

Listener::Listener(Listener&& other) noexcept
    : socket_(std::move(other.socket_)),
      address_(other.address_),
      connection_timeout_(other.connection_timeout_),
      interrupted_(other.interrupted_.load()),
      adopted_(std::move(other.adopted_)) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this == &other) return *this;
  give_back();
  socket_ = std::move(other.socket_);
  address_ = other.address_;
  connection_timeout_ = other.connection_timeout_;
  interrupted_.store(other.interrupted_.load());
  adopted_ = std::move(other.adopted_);
  return *this;
}

Listener::~Listener() { give_back(); }

void Listener::give_back() noexcept {
  // The socket's other holders (a service manager, a parent process) get it back as they gave it.
  if (adopted_ && socket_) (void)::fcntl(socket_.get(), F_SETFL, adopted_->original_flags);
}

std::optional<Connection> Listener::accept() {
  for (;;) {
    std::optional<Connection> next = accept_or_idle();
    if (!next || next->is_open()) return next;
  }
}

std::optional<Connection> Listener::accept_or_idle() {
  // An adopted socket has no connection timeout of ours, so it never idles.
  if (adopted_) return accept_adopted();
  for (;;) {
    if (interrupted()) return std::nullopt;
    Address peer;
    const int fd = accept_one(socket_.get(), peer);
    if (fd >= 0) return Connection(Fd(fd), peer, connection_timeout_);
    const int err = errno;
    if (interrupted()) return std::nullopt;
    if (err == EINTR || skippable(err)) continue;
    // SO_RCVTIMEO on the listening socket bounds accept() too: nothing arrived in that time.
    if (err == EAGAIN || err == EWOULDBLOCK) return Connection();
    throw os_error(err, "accept " + address_.to_string());
  }
}

std::optional<Connection> Listener::accept_adopted() {
  // Every poller would wake for each connection and all but one would find nothing; taking turns
  // wakes one thread per connection, as a blocking accept() does.
  const std::lock_guard<std::mutex> turn(adopted_->accepting);
  std::array<pollfd, 2> fds{};
  for (;;) {
    if (interrupted()) return std::nullopt;
    fds[0] = {socket_.get(), POLLIN, 0};
    fds[1] = {adopted_->wake.get(), POLLIN, 0};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw os_error(errno, "poll " + address_.to_string());
    }
    if (interrupted()) return std::nullopt;
    Address peer;
    // The accepted socket does not inherit O_NONBLOCK: connections are blocking, as always.
    const int fd = accept_one(socket_.get(), peer);
    if (fd >= 0) return Connection(Fd(fd), peer);
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || skippable(err)) continue;
    throw os_error(err, "accept " + address_.to_string());
  }
}

void Listener::interrupt() noexcept {
  interrupted_.store(true, std::memory_order_release);
  if (adopted_) {
    // Wakes the thread in poll(); each one after it finds the eventfd still readable. A write of 1
    // to an eventfd cannot block or fail here: the counter would need 2^64 interrupts to fill.
    const std::uint64_t one = 1;
    (void)::write(adopted_->wake.get(), &one, sizeof one);
    return;
  }
  // On Linux, shutting down a listening socket wakes every thread blocked in accept() on it
  // (with EINVAL): the same effect as closing Go's listener, without the fd-reuse race of close().
  ::shutdown(socket_.get(), SHUT_RDWR);
}

}  // namespace sockecho
