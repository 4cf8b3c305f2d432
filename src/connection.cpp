#include "sockecho/connection.hpp"

#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>

#include "sockecho/error.hpp"
#include "socket_options.hpp"

namespace sockecho {

namespace {

// Parts handed to one sendmsg(); more are sent by the next call.
constexpr std::size_t kMaxGather = 64;

bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

Connection::Connection(Fd socket, const Address& peer) : socket_(std::move(socket)), peer_(peer) {
  const int flags = ::fcntl(fd(), F_GETFL);
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd(), F_SETFL, flags | O_NONBLOCK) != 0)) {
    throw os_error(errno, "fcntl O_NONBLOCK " + peer_.to_string());
  }
}

Connection::Connection(Fd socket, const Address& peer, NonBlocking /*unused*/) noexcept
    : socket_(std::move(socket)), peer_(peer) {}

void Connection::fail(const char* operation, int err) const {
  throw os_error(err, std::string(operation) + " " + peer_.to_string());
}

int Connection::unsent_bytes() const noexcept {
  int queued = 0;
  // SIOCOUTQ: bytes in the send queue the peer has not acknowledged. On failure, report none
  // left, so a failing check never counts as progress.
  if (::ioctl(fd(), SIOCOUTQ, &queued) != 0) return 0;
  return queued;
}

void Connection::wait(short events, const char* operation) {
  (void)wait_unless(events, -1, operation);
}

bool Connection::wait_readable_unless(int stop_fd) { return wait_unless(POLLIN, stop_fd, "read"); }

bool Connection::wait_readable_until(Clock::time_point until) {
  return wait_unless(POLLIN, -1, "read", until);
}

bool Connection::wait_unless(short events, int stop_fd, const char* operation,
                             Clock::time_point give_up) {
  // Only a writer needs to look for progress it cannot see: room freed in a full send buffer.
  const bool check_sends = (events & POLLOUT) != 0 && deadline_.idle().count() > 0;
  int unsent = check_sends ? unsent_bytes() : 0;
  for (;;) {
    const Clock::time_point now = Clock::now();
    bool progressed = false;
    if ((events & POLLIN) != 0) progressed = std::exchange(read_progressed_, false);
    if ((events & POLLOUT) != 0) progressed = std::exchange(write_progressed_, false) || progressed;
    if (progressed) deadline_.progress(now);
    const Clock::time_point expiry = deadline_.expiry();
    if (now >= expiry) {
      // Name the limit that ran out when it is the whole-request one; the idle one is the rule.
      if (deadline_.end_first()) {
        throw os_error(ETIMEDOUT,
                       std::string(operation) + " " + peer_.to_string() + " (request deadline)");
      }
      fail(operation, ETIMEDOUT);
    }
    if (now >= give_up) return false;
    const Clock::time_point until =
        std::min(give_up, check_sends ? std::min(expiry, now + kProgressCheck) : expiry);
    std::array<pollfd, 2> ready{pollfd{fd(), events, 0}, pollfd{stop_fd, POLLIN, 0}};
    const int n = poll_until(ready.data(), stop_fd >= 0 ? 2 : 1, until);
    if (n > 0) return ready[0].revents != 0;  // the connection first, whatever the stop says
    if (n < 0) fail("poll", errno);
    if (check_sends) {
      const int now_unsent = unsent_bytes();
      if (now_unsent < unsent) write_progressed_ = true;
      unsent = now_unsent;
    }
  }
}

std::optional<std::size_t> Connection::try_read(char* data, std::size_t size) {
  const ssize_t n = retry_eintr([&] { return ::recv(fd(), data, size, MSG_DONTWAIT); });
  if (n < 0) {
    if (would_block(errno)) return std::nullopt;
    fail("read", errno);
  }
  if (n > 0) read_progressed_ = true;
  bytes_read_ += static_cast<std::uint64_t>(n);
  return static_cast<std::size_t>(n);
}

std::size_t Connection::read_some(char* data, std::size_t size) {
  for (;;) {
    if (const std::optional<std::size_t> n = try_read(data, size)) return *n;
    wait(POLLIN, "read");
  }
}

Address Connection::local() const {
  sockaddr_storage storage{};
  socklen_t size = sizeof storage;
  if (::getsockname(fd(), reinterpret_cast<sockaddr*>(&storage), &size) != 0) {
    throw os_error(errno, "getsockname " + peer_.to_string());
  }
  return {reinterpret_cast<const sockaddr*>(&storage), size};
}

std::optional<Credentials> Connection::peer_credentials() const {
  if (peer_.credentials()) return peer_.credentials();
  if (peer_.family() != AF_UNIX || !is_open()) return std::nullopt;
  return detail::peer_credentials_of(fd());
}

std::size_t Connection::read_into(Buffer& buffer, std::size_t limit) {
  if (buffer.room() == 0) buffer.reserve(buffer.next_capacity(limit));
  std::size_t chunk = buffer.room();
  if (limit != 0) chunk = std::min(chunk, limit - buffer.size());
  const std::size_t n = read_some(buffer.tail(), chunk);
  buffer.commit(n);
  return n;
}

bool Connection::read_to_end(Buffer& buffer, std::size_t max_bytes) {
  // With a limit, never hold more than one byte past it: that byte is how "too large" is known.
  const std::size_t limit = max_bytes == 0 ? 0 : max_bytes + 1;
  for (;;) {
    if (limit != 0 && buffer.size() >= limit) return false;
    if (read_into(buffer, limit) == 0) return true;
  }
}

std::string Connection::read_to_end_string(std::size_t max_bytes) {
  Buffer buffer;
  if (!read_to_end(buffer, max_bytes)) {
    throw os_error(EMSGSIZE, "read " + peer_.to_string() + " (more than " +
                                 std::to_string(max_bytes) + " bytes)");
  }
  return std::string(buffer.view());
}

std::size_t Connection::send_parts(const std::string_view* parts, std::size_t count,
                                   std::size_t skip) {
  std::array<iovec, kMaxGather> iov{};
  std::size_t used = 0;
  for (std::size_t i = 0; i < count && used < iov.size(); ++i) {
    const std::size_t from = i == 0 ? skip : 0;
    if (parts[i].size() == from) continue;
    // sendmsg never writes through iov_base; the cast only satisfies its C signature.
    iov[used].iov_base = const_cast<char*>(parts[i].data() + from);
    iov[used].iov_len = parts[i].size() - from;
    ++used;
  }
  if (used == 0) return 0;
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = used;
  // MSG_NOSIGNAL: a peer that has gone away is an EPIPE error here, never a SIGPIPE.
  const ssize_t sent =
      retry_eintr([&] { return ::sendmsg(fd(), &message, MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (sent < 0) {
    if (would_block(errno)) return 0;
    fail("write", errno);
  }
  if (sent > 0) write_progressed_ = true;
  bytes_written_ += static_cast<std::uint64_t>(sent);
  return static_cast<std::size_t>(sent);
}

std::size_t Connection::try_write(const std::string_view* parts, std::size_t count) {
  return send_parts(parts, count, 0);
}

void Connection::write_all(std::string_view data) { write_all(&data, 1); }

bool Connection::write_some(const std::string_view* parts, std::size_t count, Progress& at) {
  for (;;) {
    while (at.index < count && at.offset == parts[at.index].size()) {
      ++at.index;
      at.offset = 0;
    }
    if (at.index == count) return true;
    std::size_t sent = send_parts(parts + at.index, count - at.index, at.offset);
    if (sent == 0) return false;
    while (sent > 0) {
      const std::size_t rest = parts[at.index].size() - at.offset;
      if (sent < rest) {
        at.offset += sent;
        break;
      }
      sent -= rest;
      ++at.index;
      at.offset = 0;
    }
  }
}

void Connection::write_all(const std::string_view* parts, std::size_t count) {
  Progress at;
  while (!write_some(parts, count, at)) wait(POLLOUT, "write");
}

void Connection::abort() noexcept {
  if (!socket_) return;
  const linger now{1, 0};
  // If this fails the close below is an orderly one: still a close, and nothing to report to.
  (void)::setsockopt(fd(), SOL_SOCKET, SO_LINGER, &now, sizeof now);
  socket_.reset();
}

void Connection::close_write() {
  if (::shutdown(fd(), SHUT_WR) == 0) return;
  // The socket was connected, so ENOTCONN here means the peer has since reset it: say so.
  fail("shutdown", errno == ENOTCONN ? ECONNRESET : errno);
}

}  // namespace sockecho
