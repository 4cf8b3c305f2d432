#include "sockecho/connection.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "sockecho/error.hpp"

namespace sockecho {

namespace {

// First allocation of a request buffer; it doubles from there as data arrives.
constexpr std::size_t kInitialBuffer = std::size_t{64} * 1024;

// Parts handed to one sendmsg(); more are sent by the next call.
constexpr std::size_t kMaxGather = 64;

}  // namespace

Connection::Connection(Fd socket, const Address& peer) noexcept
    : socket_(std::move(socket)), peer_(peer) {}

Connection::Connection(Fd socket, const Address& peer, std::chrono::milliseconds timeout) noexcept
    : socket_(std::move(socket)), peer_(peer), timeout_(timeout) {}

void Connection::set_timeout(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) timeout = std::chrono::milliseconds(0);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (::setsockopt(fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    throw os_error(errno, "setsockopt SO_RCVTIMEO " + peer_.to_string());
  }
  if (::setsockopt(fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    throw os_error(errno, "setsockopt SO_SNDTIMEO " + peer_.to_string());
  }
  timeout_ = timeout;
}

void Connection::fail(const char* operation, int err) const {
  // SO_RCVTIMEO and SO_SNDTIMEO report expiry as EAGAIN; say what it means.
  if (err == EAGAIN || err == EWOULDBLOCK) err = ETIMEDOUT;
  throw os_error(err, std::string(operation) + " " + peer_.to_string());
}

std::size_t Connection::read_some(char* data, std::size_t size) {
  const ssize_t n = retry_eintr([&] { return ::recv(fd(), data, size, 0); });
  if (n < 0) fail("read", errno);
  bytes_read_ += static_cast<std::uint64_t>(n);
  return static_cast<std::size_t>(n);
}

std::size_t Connection::read_into(Buffer& buffer, std::size_t limit) {
  if (buffer.room() == 0) {
    std::size_t want = std::max(buffer.capacity() * 2, kInitialBuffer);
    if (limit != 0) want = std::min(want, limit);
    buffer.reserve(want);
  }
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

void Connection::write_all(std::string_view data) { write_all(&data, 1); }

void Connection::write_all(const std::string_view* parts, std::size_t count) {
  std::size_t index = 0;   // first part not yet fully written
  std::size_t offset = 0;  // bytes of parts[index] already written
  for (;;) {
    while (index < count && offset == parts[index].size()) {
      ++index;
      offset = 0;
    }
    if (index == count) return;

    std::array<iovec, kMaxGather> iov{};
    std::size_t used = 0;
    for (std::size_t i = index; i < count && used < iov.size(); ++i) {
      const std::size_t skip = i == index ? offset : 0;
      if (parts[i].size() == skip) continue;
      // sendmsg never writes through iov_base; the cast only satisfies its C signature.
      iov[used].iov_base = const_cast<char*>(parts[i].data() + skip);
      iov[used].iov_len = parts[i].size() - skip;
      ++used;
    }
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = used;
    // MSG_NOSIGNAL: a peer that has gone away is an EPIPE error here, never a SIGPIPE.
    const ssize_t sent = retry_eintr([&] { return ::sendmsg(fd(), &message, MSG_NOSIGNAL); });
    if (sent < 0) fail("write", errno);
    bytes_written_ += static_cast<std::uint64_t>(sent);

    auto left = static_cast<std::size_t>(sent);
    while (left > 0) {
      const std::size_t rest = parts[index].size() - offset;
      if (left < rest) {
        offset += left;
        break;
      }
      left -= rest;
      ++index;
      offset = 0;
    }
  }
}

void Connection::close_write() {
  if (::shutdown(fd(), SHUT_WR) == 0) return;
  // The socket was connected, so ENOTCONN here means the peer has since reset it: say so.
  fail("shutdown", errno == ENOTCONN ? ECONNRESET : errno);
}

}  // namespace sockecho
