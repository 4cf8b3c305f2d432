#include "sockecho/client.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "first_that_works.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"
#include "socket_options.hpp"

namespace sockecho {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kChunk = std::size_t{64} * 1024;

// A Unix-domain connect() does not go on in the background as TCP's does: in non-blocking mode a
// full backlog is EAGAIN at once, however soon it would have had room. So it is made blocking,
// bounded by SO_SNDTIMEO (the limit such a connect() waits by), and the socket made
// non-blocking after. 0, or the errno of the failure (ETIMEDOUT when the time ran out).
int connect_local(int fd, const Address& address, Clock::time_point until) {
  for (;;) {
    const bool timed = until != Clock::time_point::max();
    if (timed) {
      const auto left = std::chrono::duration_cast<std::chrono::microseconds>(until - Clock::now());
      if (left.count() <= 0) return ETIMEDOUT;
      const timeval tv = detail::to_timeval(left);
      if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return errno;
    }
    if (::connect(fd, address.data(), address.size()) == 0) break;
    if (errno == EINTR) continue;  // it was waiting for room, not connecting: simply again
    if (errno == EAGAIN && timed) return ETIMEDOUT;
    return errno;
  }
  const timeval none{};
  const int flags = ::fcntl(fd, F_GETFL);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none) != 0 || flags < 0 ||
      ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return errno;
  }
  return 0;
}

// One connect attempt: the connected, non-blocking socket. Throws std::system_error naming the
// call that failed and the address.
Fd connect_socket(const Address& address, const ConnectOptions& options, Clock::time_point until) {
  const auto failure = [&](const char* call, int code) {
    return os_error(code, std::string(call) + " " + address.to_string());
  };
  const bool local = address.family() == AF_UNIX;
  Fd socket(
      ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | (local ? 0 : SOCK_NONBLOCK), 0));
  if (!socket) throw failure("socket", errno);
  if (options.source) {
    // Without this, bind() would reserve a port for the source address alone; with it the port
    // is chosen at connect() and only needs to be unique for the whole 4-tuple.
    const int on = 1;
    if (options.source->family() == AF_INET &&
        ::setsockopt(socket.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) != 0) {
      throw failure("setsockopt IP_BIND_ADDRESS_NO_PORT", errno);
    }
    if (::bind(socket.get(), options.source->data(), options.source->size()) != 0) {
      throw failure("bind", errno);
    }
  }
  if (local) {
    const int code = connect_local(socket.get(), address, until);
    if (code != 0) throw failure("connect", code);
    return socket;
  }
  if (::connect(socket.get(), address.data(), address.size()) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) throw failure("connect", errno);
    // Wait for the handshake against the absolute deadline, which EINTR does not restart.
    pollfd waiting{socket.get(), POLLOUT, 0};
    const int ready = poll_until(&waiting, 1, until);
    if (ready < 0) throw failure("connect", errno);
    if (ready == 0) throw failure("connect", ETIMEDOUT);
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(socket.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) throw failure("connect", so_error);
  }
  return socket;
}

std::size_t count_newlines(const char* data, std::size_t size) {
  return static_cast<std::size_t>(std::count(data, data + size, '\n'));
}

// One read of the client's input; `name` names it in errors.
std::size_t read_input(int fd, std::vector<char>& chunk, std::string_view name) {
  const ssize_t n = retry_eintr([&] { return ::read(fd, chunk.data(), chunk.size()); });
  if (n < 0) throw os_error(errno, "read " + std::string(name));
  return static_cast<std::size_t>(n);
}

// What poll() reports for a descriptor a read would not wait on: data, end of stream, an error
// (POLLNVAL: not open; the read then says so).
constexpr short kReadable = POLLIN | POLLHUP | POLLERR | POLLNVAL;

// A regular file is always "ready" to poll() and read() never waits on it: it is simply read.
bool always_ready(int fd) {
  struct stat status {};
  return ::fstat(fd, &status) == 0 && S_ISREG(status.st_mode);
}

// The request's size when it is known before it is sent: a message's, or what is left of a
// regular file (stdin too, redirected from one); not a pipe's or a terminal's.
std::optional<std::uint64_t> request_size(const Source& source) {
  if (source.fd < 0) return source.message.size();
  struct stat status {};
  if (::fstat(source.fd, &status) != 0 || !S_ISREG(status.st_mode)) return std::nullopt;
  const off_t at = ::lseek(source.fd, 0, SEEK_CUR);
  if (at < 0 || at > status.st_size) return std::nullopt;
  return static_cast<std::uint64_t>(status.st_size - at);
}

// How a reset shows: ECONNRESET, or EPIPE for a write after the reset was reported.
bool is_reset(const std::error_code& code) {
  return code == std::errc::connection_reset || code == std::errc::broken_pipe;
}

// The echo exchange (see exchange()), reply bytes handed to `keep` as they arrive.
class EchoExchange {
 public:
  EchoExchange(Connection& connection, const Source& source,
               std::function<void(std::string_view)> keep,
               std::function<void(std::uint64_t)> on_sent)
      : connection_(connection),
        source_(source),
        keep_(std::move(keep)),
        on_sent_(std::move(on_sent)),
        input_(source.fd >= 0 ? kChunk : 0),
        pending_(source.fd >= 0 ? std::string_view() : source.message),
        input_open_(source.fd >= 0),
        poll_input_(input_open_ && !always_ready(source.fd)),
        size_(request_size(source)) {}

  Exchanged run() {
    connection_.deadline().progress(Clock::now());
    while (step()) {
    }
    return done_;
  }

 private:
  // One wait and what it found; false once the server has ended the exchange.
  bool step() {
    Deadline& deadline = connection_.deadline();
    if (input_open_ && pending_.empty() && !poll_input_) take_input();
    if (!input_open_ && pending_.empty() && !half_closed_) {
      connection_.close_write();
      half_closed_ = true;
      if (on_sent_) on_sent_(done_.sent);
    }
    std::array<pollfd, 2> fds{};
    fds[0] = {connection_.fd(), static_cast<short>(POLLIN | (pending_.empty() ? 0 : POLLOUT)), 0};
    const bool want_input = input_open_ && pending_.empty();
    fds[1] = {want_input ? source_.fd : -1, POLLIN, 0};
    // While only the input is awaited, the server owes nothing yet: that wait is not timed.
    const Clock::time_point until = want_input ? deadline.end() : deadline.expiry();
    const char* operation = pending_.empty() ? "read" : "write";
    const int ready = Clock::now() >= until ? 0 : poll_until(fds.data(), fds.size(), until);
    if (ready < 0) throw os_error(errno, "poll " + connection_.peer().to_string());
    if (ready == 0) throw os_error(ETIMEDOUT, operation + (" " + connection_.peer().to_string()));

    if ((fds[0].revents & kReadable) != 0 && !take_reply()) return false;
    if ((fds[0].revents & POLLOUT) != 0 && !pending_.empty()) send();
    if ((fds[1].revents & kReadable) != 0) {
      take_input();
      // The wait for the server starts when there is something to send.
      deadline.progress(Clock::now());
    }
    return true;
  }

  // One read of the server's bytes, handed on; false at its end of stream.
  bool take_reply() {
    std::optional<std::size_t> n;
    try {
      n = connection_.try_read(reply_.data(), reply_.size());
    } catch (const std::system_error& e) {
      if (is_reset(e.code()) && !half_closed_ && !source_ended()) cut(e.code(), true, e.what());
      throw;
    }
    if (!n) return true;
    if (*n == 0) {
      if (!half_closed_ && !source_ended()) {
        cut(std::make_error_code(std::errc::broken_pipe), false,
            "read " + connection_.peer().to_string() + ": end of stream");
      }
      return false;
    }
    keep_(std::string_view(reply_.data(), *n));
    done_.received += *n;
    connection_.deadline().progress(Clock::now());
    return true;
  }

  void send() {
    std::size_t n = 0;
    try {
      n = connection_.try_write(&pending_, 1);
    } catch (const std::system_error& e) {
      if (is_reset(e.code())) cut(e.code(), true, e.what());  // pending: not half-closed yet
      throw;
    }
    pending_.remove_prefix(n);
    done_.sent += n;
    if (n > 0) connection_.deadline().progress(Clock::now());
  }

  void take_input() {
    const std::size_t n = read_input(source_.fd, input_, source_.name);
    input_open_ = n > 0;
    pending_ = std::string_view(input_.data(), n);
  }

  // Whether every byte of the source has been sent, its end included: asked when the server
  // ends the exchange before the half-close, which would have followed. An input not known to have
  // ended is read once more, without waiting: a pipe whose writer has not closed it yet has not
  // ended.
  bool source_ended() {
    if (!pending_.empty()) return false;
    if (!input_open_) return true;
    if (poll_input_) {
      pollfd input{source_.fd, POLLIN, 0};
      const int ready = retry_eintr([&] { return ::poll(&input, 1, 0); });
      if (ready < 0) throw os_error(errno, "poll " + std::string(source_.name));
      if ((input.revents & kReadable) == 0) return false;
    }
    take_input();
    return !input_open_;
  }

  [[noreturn]] void cut(std::error_code code, bool reset, const std::string& cause) const {
    // A size the source outgrew (a file appended to meanwhile) is no longer known.
    const std::optional<std::uint64_t> size =
        size_ && *size_ > done_.sent ? size_ : std::optional<std::uint64_t>();
    throw RequestCut(code, reset, done_.sent, size, cause);
  }

  Connection& connection_;
  Source source_;
  std::function<void(std::string_view)> keep_;
  std::function<void(std::uint64_t)> on_sent_;
  std::vector<char> reply_ = std::vector<char>(kChunk);
  std::vector<char> input_;
  std::string_view pending_;  // read from the source, not yet sent
  bool input_open_;
  bool poll_input_;
  bool half_closed_ = false;
  std::optional<std::uint64_t> size_;
  Exchanged done_;
};

// The line-mode session (see line_session()): what it has read, sent and had answered.
class LineSession {
 public:
  LineSession(Connection& connection, int in_fd, int out_fd, milliseconds reply_timeout)
      : connection_(connection), in_fd_(in_fd), out_fd_(out_fd), reply_timeout_(reply_timeout) {}

  void run() {
    try {
      while (step()) {
      }
    } catch (const std::system_error& e) {
      // The output's own EPIPE (its reader gone) is no reset by the server.
      if (output_failed_ || !is_reset(e.code())) throw;
      after_reset(e);
    }
  }

 private:
  // One wait and what it found; false once the server has closed the session as it should.
  bool step() {
    if (!input_open_ && pending_.empty() && !half_closed_) {
      half_closed_ = true;
      connection_.close_write();
    }
    std::array<pollfd, 2> fds{};
    fds[0] = {connection_.fd(), static_cast<short>(POLLIN | (pending_.empty() ? 0 : POLLOUT)), 0};
    const bool want_input = input_open_ && pending_.size() < kChunk;
    fds[1] = {want_input ? in_fd_ : -1, POLLIN, 0};
    const bool waiting = received_ < owed_ || !input_open_;
    const int ready =
        poll_until(fds.data(), fds.size(),
                   waiting ? end_after(reply_timeout_, last_progress_) : Clock::time_point::max());
    if (ready < 0) throw os_error(errno, "poll " + connection_.peer().to_string());
    if (ready == 0) throw os_error(ETIMEDOUT, "read " + connection_.peer().to_string());

    if ((fds[0].revents & kReadable) != 0 && !take_replies()) return false;
    if ((fds[0].revents & POLLOUT) != 0 && !pending_.empty()) {
      const std::string_view unsent = pending_;
      pending_.erase(0, connection_.try_write(&unsent, 1));
    }
    if ((fds[1].revents & kReadable) != 0) take_input();
    return true;
  }

  // One read of the server's replies, passed to the output; false at the server's close.
  bool take_replies() {
    const std::optional<std::size_t> n = connection_.try_read(chunk_.data(), chunk_.size());
    if (!n) return true;
    if (*n == 0) {
      // The server ends a session only after the client's close: closing first, it leaves
      // lines unanswered, or input it can no longer take.
      if (received_ < owed_ || input_open_ || !pending_.empty()) {
        throw os_error(EPROTO, "read " + connection_.peer().to_string() + " (closed with " +
                                   unanswered() + ")");
      }
      return false;
    }
    pass_on(*n);
    last_progress_ = Clock::now();
    return true;
  }

  void take_input() {
    const std::size_t n = read_input(in_fd_, chunk_, "input");
    if (n == 0) {
      input_open_ = false;
      // A last line without '\n' is answered too.
      if (mid_line_) ++owed_;
      return;
    }
    if (received_ >= owed_) last_progress_ = Clock::now();  // a new wait begins now
    owed_ += count_newlines(chunk_.data(), n);
    mid_line_ = chunk_[n - 1] != '\n';
    pending_.append(chunk_.data(), n);
  }

  // The first `n` bytes of chunk_, replies: counted and written out.
  void pass_on(std::size_t n) {
    received_ += count_newlines(chunk_.data(), n);
    try {
      write_all(out_fd_, std::string_view(chunk_.data(), n), "output");
    } catch (const std::system_error&) {
      output_failed_ = true;
      throw;
    }
  }

  // A reset, seen by whichever call met it first, says what it cost.
  [[noreturn]] void after_reset(const std::system_error& e) {
    // Replies that arrived before the reset are still queued: they are answers, print them.
    for (;;) {
      std::optional<std::size_t> n;
      try {
        n = connection_.try_read(chunk_.data(), chunk_.size());
      } catch (const std::system_error&) {
        break;  // the reset itself, once the queue is empty
      }
      if (!n || *n == 0) break;
      pass_on(*n);
    }
    std::string what = e.what();
    const std::string reason = ": " + e.code().message();
    if (what.size() >= reason.size() &&
        what.compare(what.size() - reason.size(), reason.size(), reason) == 0) {
      what.resize(what.size() - reason.size());
    }
    throw os_error(e.code().value(), what + " (reset with " + unanswered() + ")");
  }

  [[nodiscard]] std::string unanswered() const {
    std::string text = std::to_string(owed_ - received_) + " lines unanswered";
    if (input_open_ || !pending_.empty()) text += ", input left unsent";
    return text;
  }

  Connection& connection_;
  int in_fd_;
  int out_fd_;
  milliseconds reply_timeout_;
  std::vector<char> chunk_ = std::vector<char>(kChunk);
  std::string pending_;  // read from in_fd, not yet sent
  bool input_open_ = true;
  bool half_closed_ = false;
  bool mid_line_ = false;       // the input so far ends without '\n'
  bool output_failed_ = false;  // a write to out_fd failed
  std::uint64_t owed_ = 1;      // lines the server owes: the greeting, then one per line sent
  std::uint64_t received_ = 0;  // '\n'-terminated lines received
  Clock::time_point last_progress_ = Clock::now();
};

}  // namespace

RequestCut::RequestCut(std::error_code code, bool reset, std::uint64_t sent,
                       std::optional<std::uint64_t> size, const std::string& cause)
    : std::system_error(code),
      text_("request cut after " + std::to_string(sent) +
            (size ? " of " + std::to_string(*size) : std::string()) + " bytes (" + cause + ")"),
      sent_(sent),
      size_(size),
      reset_(reset) {}

Connection connect(const Address& address, const ConnectOptions& options) {
  return {connect_socket(address, options, end_after(options.timeout)), address,
          Connection::NonBlocking{}};
}

Connection connect(std::string_view host, std::uint16_t port, milliseconds timeout) {
  const Clock::time_point until = end_after(timeout);
  const std::vector<Address> candidates = resolve(host, port);
  std::string tried;
  try {
    return detail::first_that_works(
        candidates,
        [&](const Address& address) {
          if (!tried.empty()) tried += ", ";
          tried += address.to_string();
          return Connection(connect_socket(address, {}, until), address, Connection::NonBlocking{});
        },
        // One deadline for all the addresses: none is tried once it has passed.
        [&] { return Clock::now() < until; });
  } catch (const std::system_error& first) {
    // One line for all of them: the first failure's reason, and every address tried.
    throw os_error(first.code().value(), "connect " + tried);
  }
}

std::string request(std::string_view host, std::uint16_t port, std::string_view message,
                    const RequestOptions& options) {
  Connection connection = connect(host, port, options.timeout);
  connection.set_timeout(options.timeout);
  std::string reply;
  const auto keep = [&](std::string_view bytes) {
    if (options.max_reply != 0 && bytes.size() > options.max_reply - reply.size()) {
      throw os_error(EMSGSIZE, "read " + connection.peer().to_string() + " (more than " +
                                   std::to_string(options.max_reply) + " bytes)");
    }
    reply.append(bytes);
  };
  (void)EchoExchange(connection, Source::bytes(message), keep, {}).run();
  return reply;
}

Exchanged exchange(Connection& connection, const Source& source, int out_fd,
                   const std::function<void(std::uint64_t)>& on_sent) {
  const auto copy = [out_fd](std::string_view bytes) { write_all(out_fd, bytes, "output"); };
  return EchoExchange(connection, source, copy, on_sent).run();
}

void line_session(Connection& connection, int in_fd, int out_fd, milliseconds reply_timeout) {
  LineSession(connection, in_fd, out_fd, reply_timeout).run();
}

}  // namespace sockecho
