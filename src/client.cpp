#include "sockecho/client.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>
#include <vector>

#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"

namespace sockecho {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kChunk = std::size_t{64} * 1024;

Clock::time_point until_after(milliseconds timeout) {
  return timeout.count() > 0 ? Clock::now() + timeout : Clock::time_point::max();
}

// One connect attempt: the connected, non-blocking socket, or an empty Fd with the failed call
// and its errno in `failed` and `err`.
Fd try_connect(const Address& address, const ConnectOptions& options, Clock::time_point until,
               const char*& failed, int& err) {
  const auto failure = [&](const char* call, int code) {
    failed = call;
    err = code;
    return Fd();
  };
  Fd socket(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!socket) return failure("socket", errno);
  if (options.source) {
    // Without this, bind() would reserve a port for the source address alone; with it the port
    // is chosen at connect() and only needs to be unique for the whole 4-tuple.
    const int on = 1;
    if (options.source->family() == AF_INET &&
        ::setsockopt(socket.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) != 0) {
      return failure("setsockopt IP_BIND_ADDRESS_NO_PORT", errno);
    }
    if (::bind(socket.get(), options.source->data(), options.source->size()) != 0) {
      return failure("bind", errno);
    }
  }
  if (::connect(socket.get(), address.data(), address.size()) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) return failure("connect", errno);
    // Wait for the handshake against the absolute deadline, which EINTR does not restart.
    pollfd waiting{socket.get(), POLLOUT, 0};
    const int ready = poll_until(&waiting, 1, until);
    if (ready < 0) return failure("connect", errno);
    if (ready == 0) return failure("connect", ETIMEDOUT);
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(socket.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) return failure("connect", so_error);
  }
  return socket;
}

std::size_t count_newlines(const char* data, std::size_t size) {
  return static_cast<std::size_t>(std::count(data, data + size, '\n'));
}

}  // namespace

Connection connect(const Address& address, const ConnectOptions& options) {
  const char* failed = "connect";
  int err = 0;
  Fd socket = try_connect(address, options, until_after(options.timeout), failed, err);
  if (!socket) throw os_error(err, std::string(failed) + " " + address.to_string());
  return {std::move(socket), address, Connection::NonBlocking{}};
}

Connection connect(std::string_view host, std::uint16_t port, milliseconds timeout) {
  const Clock::time_point until = until_after(timeout);
  const std::vector<Address> candidates = resolve(host, port);
  int first_error = 0;
  std::string tried;
  for (const Address& address : candidates) {
    const char* failed = "connect";
    int err = 0;
    Fd socket = try_connect(address, {}, until, failed, err);
    if (socket) return {std::move(socket), address, Connection::NonBlocking{}};
    if (first_error == 0) first_error = err;
    if (!tried.empty()) tried += ", ";
    tried += address.to_string();
    if (Clock::now() >= until) break;
  }
  throw os_error(first_error, "connect " + tried);
}

std::string request(std::string_view host, std::uint16_t port, std::string_view message,
                    const RequestOptions& options) {
  Connection connection = connect(host, port, options.timeout);
  connection.set_timeout(options.timeout);
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
    const int ready = poll_until(fds.data(), fds.size(),
                                 timed ? last_progress + reply_timeout : Clock::time_point::max());
    if (ready < 0) throw os_error(errno, "poll " + connection.peer().to_string());
    if (ready == 0) throw os_error(ETIMEDOUT, "read " + connection.peer().to_string());

    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (const std::optional<std::size_t> n = connection.try_read(chunk.data(), chunk.size())) {
        if (*n == 0) {
          if (received < owed) {
            throw os_error(EPROTO, "read " + connection.peer().to_string() + " (closed with " +
                                       std::to_string(owed - received) + " lines unanswered)");
          }
          return;
        }
        received += count_newlines(chunk.data(), *n);
        write_all(out_fd, std::string_view(chunk.data(), *n), "output");
        last_progress = Clock::now();
      }
    }
    if ((fds[0].revents & POLLOUT) != 0 && !pending.empty()) {
      const std::string_view unsent = pending;
      pending.erase(0, connection.try_write(&unsent, 1));
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
