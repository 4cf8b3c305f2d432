#include "sockecho/listener.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "address_access.hpp"
#include "first_that_works.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"
#include "socket_options.hpp"
#include "wake.hpp"

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

// One accept4(): a close-on-exec, non-blocking descriptor with its peer filled in, or -1 with
// errno set.
int accept_one(int listener, Address& peer) noexcept {
  socklen_t len = Address::capacity();
  const int fd = ::accept4(listener, peer.data(), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) peer.set_size(len);
  return fd;
}

// Makes room for a Unix socket at `path` before binding it. Nothing there: nothing to do. A
// socket nobody listens on (connecting is refused): a crashed server's leftover, removed. A
// socket a server listens on: EADDRINUSE. Anything else: EEXIST, and it stays as it is (lstat:
// a symbolic link is "anything else", never followed).
void clear_stale_socket(const Address& address, const std::string& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) {
    if (errno == ENOENT) return;
    throw os_error(errno, "stat " + address.to_string());
  }
  if (!S_ISSOCK(status.st_mode)) {
    throw os_error(EEXIST, "bind " + address.to_string() + " (not a socket; left untouched)");
  }
  const Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) throw os_error(errno, "socket " + address.to_string());
  // A Unix connect() never waits in non-blocking mode: it succeeds, finds the backlog full
  // (EAGAIN: a server listens there too), or is refused at once.
  if (::connect(probe.get(), address.data(), address.size()) == 0 || errno == EAGAIN) {
    throw os_error(EADDRINUSE, "bind " + address.to_string() + " (a server listens there)");
  }
  if (errno != ECONNREFUSED) {
    throw os_error(errno, "connect " + address.to_string() + " (is the socket there in use?)");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw os_error(errno, "unlink stale " + address.to_string());
  }
}

// Sets the permission bits of the file `file` (an O_PATH descriptor) refers to. fchmod() cannot:
// on a socket's descriptor it changes the socket, not its file; and there is no fchmodat() on a
// descriptor alone before Linux 6.6. Its /proc/self/fd link names exactly that file, however the
// path changes meanwhile; without /proc, the path is the way left.
void set_mode(int file, const std::string& path, mode_t mode, const Address& address) {
  const std::string link = "/proc/self/fd/" + std::to_string(file);
  if (::chmod(link.c_str(), mode) == 0) return;
  if (errno != ENOENT || ::chmod(path.c_str(), mode) != 0) {
    throw os_error(errno, "chmod " + address.to_string());
  }
}

}  // namespace

Listener Listener::bind(std::string_view host, std::uint16_t port, const ListenOptions& options) {
  return detail::first_that_works(resolve(host, port, /*passive=*/true),
                                  [&](const Address& candidate) {
                                    Fd socket = listen_on(candidate, options);
                                    const Address bound = Address::local_of(socket.get());
                                    return Listener(std::move(socket), bound);
                                  });
}

gid_t find_group(std::string_view name) {
  if (name.empty()) throw std::invalid_argument("group name is empty");
  if (name.find_first_not_of("0123456789") == std::string_view::npos && name.size() <= 9) {
    return static_cast<gid_t>(std::stoul(std::string(name)));
  }
  const std::string text(name);
  std::vector<char> room(1024);
  for (;;) {
    group entry{};
    group* found = nullptr;
    const int rc = ::getgrnam_r(text.c_str(), &entry, room.data(), room.size(), &found);
    if (rc == ERANGE && room.size() < (std::size_t{1} << 20)) {
      room.resize(room.size() * 2);
      continue;
    }
    // "Not found" is 0 with no entry, or one of these from some name services.
    if (found == nullptr &&
        (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)) {
      throw std::invalid_argument("unknown group '" + text + "'");
    }
    if (rc != 0) throw os_error(rc, "getgrnam " + text);
    return found->gr_gid;
  }
}

Listener Listener::bind_unix(std::string_view path, const UnixOptions& options) {
  const Address address = Address::unix_path(path);
  const std::string name(path);
  const bool abstract = name.front() == '@';
  Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) throw os_error(errno, "socket " + address.to_string());
  if (!abstract) clear_stale_socket(address, name);
  if (::bind(socket.get(), address.data(), address.size()) != 0) {
    throw os_error(errno, "bind " + address.to_string());
  }
  // From here the Listener owns the file, so a failure below removes it again.
  Listener listener(std::move(socket), address);
  if (!abstract) {
    // Until listen(), connecting is refused: permissions set now hold for every connection.
    const Fd file(::open(name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    struct stat status {};
    if (!file || ::fstat(file.get(), &status) != 0) {
      throw os_error(errno, "stat " + address.to_string());
    }
    if (!S_ISSOCK(status.st_mode)) {
      throw os_error(EEXIST, "bind " + address.to_string() + " (replaced while binding)");
    }
    listener.file_ = OwnedFile{name, status.st_dev, status.st_ino};
    if (options.group &&
        ::fchownat(file.get(), "", static_cast<uid_t>(-1), *options.group, AT_EMPTY_PATH) != 0) {
      throw os_error(
          errno, "chown " + address.to_string() + " to group " + std::to_string(*options.group));
    }
    set_mode(file.get(), name, options.mode, address);
  }
  if (::listen(listener.fd(), options.backlog) != 0) {
    throw os_error(errno, "listen " + address.to_string());
  }
  return listener;
}

void Listener::remove_file() noexcept {
  if (!file_) return;
  // Only the file this Listener created: a server started after it may have replaced it (taking
  // it for stale once this one stopped listening), and that one's socket must stay.
  struct stat status {};
  if (::lstat(file_->path.c_str(), &status) == 0 && S_ISSOCK(status.st_mode) &&
      status.st_dev == file_->device && status.st_ino == file_->inode) {
    (void)::unlink(file_->path.c_str());
  }
  file_.reset();
}

// What an adopted socket needs besides the socket itself.
struct Listener::Adopted {
  explicit Adopted(const std::string& name) : wake(name) {}

  detail::Wake wake;       // readable once interrupt() has been called
  std::mutex accepting;    // one thread waits in poll() at a time; the others wait here
  int original_flags = 0;  // the socket's file status flags as they were found
};

Listener::Listener(Fd socket, const Address& address) noexcept
    : socket_(std::move(socket)), address_(address) {}

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
  if (address_.family() != AF_INET && address_.family() != AF_INET6 &&
      address_.family() != AF_UNIX) {
    throw os_error(EINVAL, name + " (not an IPv4, IPv6 or Unix-domain socket)");
  }
  auto adopted = std::make_unique<Adopted>(address_.to_string());
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
      idle_(other.idle_),
      interrupted_(other.interrupted_.load()),
      adopted_(std::move(other.adopted_)),
      file_(std::exchange(other.file_, std::nullopt)) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this == &other) return *this;
  remove_file();
  give_back();
  socket_ = std::move(other.socket_);
  address_ = other.address_;
  idle_ = other.idle_;
  interrupted_.store(other.interrupted_.load());
  adopted_ = std::move(other.adopted_);
  file_ = std::exchange(other.file_, std::nullopt);
  return *this;
}

Listener::~Listener() {
  remove_file();
  give_back();
}

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

void Listener::set_idle_timeout(std::chrono::milliseconds idle) {
  idle = std::max(idle, std::chrono::milliseconds(0));
  // A socket of our own waits in accept() itself, bounded by SO_RCVTIMEO on the listening
  // socket (connections are non-blocking, so what they inherit of it never applies). An
  // adopted socket is not ours to change: its wait is the poll() in wait_adopted().
  if (!adopted_) {
    const timeval tv = detail::to_timeval(idle);
    if (::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
      throw os_error(errno, "setsockopt SO_RCVTIMEO " + address_.to_string());
    }
  }
  idle_ = idle;
}

std::optional<Connection> Listener::accept_or_idle() {
  // Every poller of an adopted socket would wake for each connection and all but one would find
  // nothing; taking turns wakes one thread per connection, as a blocking accept() does.
  std::unique_lock<std::mutex> turn;
  if (adopted_) turn = std::unique_lock<std::mutex>(adopted_->accepting);
  for (;;) {
    if (interrupted()) return std::nullopt;
    if (adopted_ && !wait_adopted()) return Connection();
    if (interrupted()) return std::nullopt;
    Address peer;
    const int fd = retry_eintr([&] { return accept_one(socket_.get(), peer); });
    if (fd >= 0) return accepted(fd, peer);
    const int err = errno;
    if (interrupted()) return std::nullopt;
    if (skippable(err)) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      // Adopted (non-blocking): another holder of the socket took the connection first.
      // Our own: SO_RCVTIMEO ran out with nothing to accept.
      if (adopted_) continue;
      return Connection();
    }
    throw os_error(err, "accept " + address_.to_string());
  }
}

Connection Listener::accepted(int fd, Address& peer) const {
  // A Unix-domain peer has no address worth the name: who it is, is its credentials. Kept on the
  // peer address, so they outlive the socket (the log line is written after close).
  if (address_.family() == AF_UNIX) {
    if (const std::optional<Credentials> cred = detail::peer_credentials_of(fd)) {
      detail::AddressAccess::set_credentials(peer, *cred);
    }
  }
  return {Fd(fd), peer, Connection::NonBlocking{}};
}

bool Listener::wait_adopted() {
  std::array<pollfd, 2> fds{};
  fds[0] = {socket_.get(), POLLIN, 0};
  fds[1] = {adopted_->wake.fd(), POLLIN, 0};
  const int ready = poll_until(fds.data(), fds.size(), end_after(idle_));
  if (ready < 0) throw os_error(errno, "poll " + address_.to_string());
  return ready > 0;
}

void Listener::interrupt() noexcept {
  interrupted_.store(true, std::memory_order_release);
  if (adopted_) {
    // Wakes the thread in poll(); each one after it finds the wake-up still readable.
    adopted_->wake.signal();
    return;
  }
  // On Linux, shutting down a listening socket wakes every thread blocked in accept() on it
  // (with EINVAL): the same effect as closing Go's listener, without the fd-reuse race of close().
  ::shutdown(socket_.get(), SHUT_RDWR);
}

}  // namespace sockecho
