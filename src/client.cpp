#include "sockecho/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>
#include <vector>

#include "sockecho/error.hpp"

namespace sockecho {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kChunk = std::size_t{64} * 1024;

// Milliseconds left until deadline, as poll() wants them; -1 (forever) without a deadline.
int poll_timeout(bool has_deadline, Clock::time_point deadline) {
  if (!has_deadline) return -1;
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  // Round up so a nearly expired deadline still gets one more look instead of spinning.
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 1 << 30));
}

void set_blocking(int fd, bool blocking, const Address& address) {
  const int flags = ::fcntl(fd, F_GETFL);
  const int wanted = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
  if (flags < 0 || ::fcntl(fd, F_SETFL, wanted) != 0) {
    throw os_error(errno, "fcntl " + address.to_string());
  }
}

// One connect attempt; returns the socket or sets err and returns an empty Fd.
Fd try_connect(const Address& address, bool has_deadline, Clock::time_point deadline, int& err) {
  Fd socket(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!socket) {
    err = errno;
    return {};
  }
  if (::connect(socket.get(), address.data(), address.size()) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) {
      err = errno;
      return {};
    }
    // Wait for the handshake; EINTR must not restart the clock, so the deadline is absolute.
    pollfd waiting{socket.get(), POLLOUT, 0};
    int ready = 0;
    do {
      ready = ::poll(&waiting, 1, poll_timeout(has_deadline, deadline));
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) {
      err = errno;
      return {};
    }
    if (ready == 0) {
      err = ETIMEDOUT;
      return {};
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(socket.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) {
      err = so_error;
      return {};
    }
  }
  set_blocking(socket.get(), true, address);
  return socket;
}

std::size_t count_newlines(const char* data, std::size_t size) {
  return static_cast<std::size_t>(std::count(data, data + size, '\n'));
}

}  // namespace

Connection connect(std::string_view host, std::uint16_t port, milliseconds timeout) {
  const bool has_deadline = timeout.count() > 0;
  const Clock::time_point deadline = Clock::now() + timeout;
  const std::vector<Address> candidates = resolve(host, port);
  int first_error = 0;
  std::string tried;
  for (const Address& address : candidates) {
    int err = 0;
    Fd socket = try_connect(address, has_deadline, deadline, err);
    if (socket) return {std::move(socket), address};
    if (first_error == 0) first_error = err;
    if (!tried.empty()) tried += ", ";
    tried += address.to_string();
    if (has_deadline && Clock::now() >= deadline) break;
  }
  throw os_error(first_error, "connect " + tried);
}

std::string request(std::string_view host, std::uint16_t port, std::string_view message,
                    const RequestOptions& options) {
  Connection connection = connect(host, port, options.timeout);
  if (options.timeout.count() > 0) connection.set_timeout(options.timeout);
  connection.write_all(message);
  connection.close_write();
  return connection.read_to_end_string(options.max_reply);
}

std::uint64_t send_from_fd(Connection& connection, int in_fd, std::string_view source) {
  std::vector<char> chunk(kChunk);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(in_fd, chunk.data(), chunk.size()); });
    if (n < 0) throw os_error(errno, "read " + std::string(source));
    if (n == 0) return total;
    connection.write_all(std::string_view(chunk.data(), static_cast<std::size_t>(n)));
    total += static_cast<std::uint64_t>(n);
  }
}

std::uint64_t receive_to_fd(Connection& connection, int out_fd) {
  std::vector<char> chunk(kChunk);
  std::uint64_t total = 0;
  for (;;) {
    const std::size_t n = connection.read_some(chunk.data(), chunk.size());
    if (n == 0) return total;
    write_all(out_fd, std::string_view(chunk.data(), n), "output");
    total += n;
  }
}

void line_session(Connection& connection, int in_fd, int out_fd, milliseconds reply_timeout) {
  const int sock = connection.fd();
  const std::string peer = connection.peer().to_string();
  std::vector<char> chunk(kChunk);
  std::string pending;  // read from in_fd, not yet sent
  bool input_open = true;
  bool half_closed = false;
  bool mid_line = false;       // the input so far ends without '\n'
  std::uint64_t owed = 1;      // lines the server owes: the greeting, then one per line sent
  std::uint64_t received = 0;  // '\n'-terminated lines received
  Clock::time_point last_progress = Clock::now();

  for (;;) {
    if (!input_open && pending.empty() && !half_closed) {
      half_closed = true;
      try {
        connection.close_write();
      } catch (const std::system_error& e) {
        // The server has already reset the connection; the read below reports that with what it
        // means (lines left unanswered) rather than as a failed half-close.
        if (e.code() != std::errc::connection_reset) throw;
      }
    }
    std::array<pollfd, 2> fds{};
    fds[0] = {sock, static_cast<short>(POLLIN | (pending.empty() ? 0 : POLLOUT)), 0};
    const bool want_input = input_open && pending.size() < kChunk;
    fds[1] = {want_input ? in_fd : -1, POLLIN, 0};
    const bool waiting = received < owed || !input_open;
    const bool timed = waiting && reply_timeout.count() > 0;
    const int ready =
        ::poll(fds.data(), fds.size(), poll_timeout(timed, last_progress + reply_timeout));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw os_error(errno, "poll " + peer);
    }
    if (ready == 0) throw os_error(ETIMEDOUT, "read " + peer);

    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n =
          retry_eintr([&] { return ::recv(sock, chunk.data(), chunk.size(), MSG_DONTWAIT); });
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) throw os_error(errno, "read " + peer);
      if (n == 0) {
        if (received < owed) {
          throw os_error(EPROTO, "read " + peer + " (closed with " +
                                     std::to_string(owed - received) + " lines unanswered)");
        }
        return;
      }
      if (n > 0) {
        const auto size = static_cast<std::size_t>(n);
        received += count_newlines(chunk.data(), size);
        write_all(out_fd, std::string_view(chunk.data(), size), "output");
        last_progress = Clock::now();
      }
    }
    if ((fds[0].revents & POLLOUT) != 0 && !pending.empty()) {
      const ssize_t n = retry_eintr([&] {
        return ::send(sock, pending.data(), pending.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      });
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) throw os_error(errno, "write " + peer);
      if (n > 0) pending.erase(0, static_cast<std::size_t>(n));
    }
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = retry_eintr([&] { return ::read(in_fd, chunk.data(), chunk.size()); });
      if (n < 0) throw os_error(errno, "read input");
      if (n == 0) {
        input_open = false;
        // A last line without '\n' is answered too.
        if (mid_line) ++owed;
      } else {
        const auto size = static_cast<std::size_t>(n);
        if (received >= owed) last_progress = Clock::now();  // a new wait begins now
        owed += count_newlines(chunk.data(), size);
        mid_line = chunk[size - 1] != '\n';
        pending.append(chunk.data(), size);
      }
    }
  }
}

}  // namespace sockecho
