// sockecho: the client side of the protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include "sockecho/connection.hpp"
#include "sockecho/export.hpp"

namespace sockecho {

struct SOCKECHO_EXPORT ConnectOptions {
  // Bounds the attempt (all addresses together); zero waits as long as the kernel does.
  std::chrono::milliseconds timeout{0};
  // The local address to connect from (its port 0: any); unset: the kernel's choice.
  std::optional<Address> source;
};

// Connects to one address: TCP, or a Unix-domain socket (Address::unix_path()), where a full
// backlog is waited out within the timeout as TCP's handshake is. The connection is returned
// with no limits set. Throws std::system_error, e.g. "connect 127.0.0.1:12387: Connection
// refused", "connect unix:/run/x.sock: Permission denied".
[[nodiscard]] SOCKECHO_EXPORT Connection connect(const Address& address,
                                                 const ConnectOptions& options = {});

// Connects to host:port, trying every address the name resolves to, in order, until one
// accepts. A non-zero timeout bounds the whole attempt. The connection is returned with no
// limits set. Throws std::system_error, e.g. "connect 127.0.0.1:12387: Connection refused"
// (every address tried is named).
[[nodiscard]] SOCKECHO_EXPORT Connection
connect(std::string_view host, std::uint16_t port,
        std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

struct SOCKECHO_EXPORT RequestOptions {
  // Bounds connecting and each wait for the server; zero means wait forever.
  std::chrono::milliseconds timeout{0};
  // Largest reply accepted (EMSGSIZE beyond it); zero means no limit.
  std::size_t max_reply = 0;
};

// What an echo exchange sends: the bytes of a message, or everything readable from a
// descriptor (a file, a pipe, stdin) until its end.
struct SOCKECHO_EXPORT Source {
  std::string_view message;  // sent when fd is -1; must outlive the exchange
  int fd = -1;
  std::string_view name;  // names fd in errors, e.g. "stdin" or a path

  [[nodiscard]] static Source bytes(std::string_view message) noexcept { return {message, -1, {}}; }
  [[nodiscard]] static Source descriptor(int fd, std::string_view name) noexcept {
    return {{}, fd, name};
  }
};

// Byte counts of one exchange.
struct SOCKECHO_EXPORT Exchanged {
  std::uint64_t sent = 0;      // bytes of the source the kernel took
  std::uint64_t received = 0;  // reply bytes
};

// The server ended the connection before the whole request was sent: it closed it (an end of
// stream, a half-close too) or reset it while the source still had bytes for it, or before the
// source's end was known. what() is "request cut after N of M bytes (CAUSE)", or "request cut
// after N bytes (CAUSE)" when the request's size was not known beforehand (a pipe, a terminal),
// CAUSE being "read 127.0.0.1:12387: end of stream" or the error that showed the reset ("write
// 127.0.0.1:12387: Connection reset by peer"). code() is that error (ECONNRESET or EPIPE), and
// EPIPE for an end of stream: the request's reader has gone.
class SOCKECHO_EXPORT RequestCut : public std::system_error {
 public:
  RequestCut(std::error_code code, bool reset, std::uint64_t sent,
             std::optional<std::uint64_t> size, const std::string& cause);
  // Bytes of the request the kernel took before the cut (N).
  [[nodiscard]] std::uint64_t sent() const noexcept { return sent_; }
  // The request's whole size (M), when it was known before sending: a message, a regular file.
  [[nodiscard]] std::optional<std::uint64_t> size() const noexcept { return size_; }
  // True for a reset, false for an end of stream.
  [[nodiscard]] bool reset() const noexcept { return reset_; }
  [[nodiscard]] const char* what() const noexcept override { return text_.what(); }

 private:
  std::runtime_error text_;  // copies without throwing, as an exception's members must
  std::uint64_t sent_;
  std::optional<std::uint64_t> size_;
  bool reset_;
};

// One exchange of the echo protocol on a connected socket, both directions at once: it sends the
// source while it copies whatever the server sends to out_fd as it arrives, half-closes when the
// source ends (then calls on_sent, if set, with the bytes sent), and returns when the server
// closes. So a server that streams its reply while the request is still arriving never
// deadlocks it, at any size. The connection's limits are the idle limit: no progress in either
// direction for that long is ETIMEDOUT, but waiting for the source's own bytes (a person typing)
// is never timed. Throws RequestCut when the server ends the connection before the whole request
// was sent; then nothing more is copied to out_fd. Throws std::system_error: ECONNRESET or EPIPE
// when the server reset the connection after the whole request (it went unanswered), the
// write's error when out_fd fails ("write output: Broken pipe"); reply bytes already copied to
// out_fd stay there.
SOCKECHO_EXPORT Exchanged exchange(Connection& connection, const Source& source, int out_fd,
                                   const std::function<void(std::uint64_t sent)>& on_sent = {});

// connect() and exchange() in one: sends the whole message (while reading, as exchange() does),
// half-closes, and returns everything the server sends until it closes. Throws RequestCut and
// std::system_error as exchange() does, and EMSGSIZE past max_reply.
[[nodiscard]] SOCKECHO_EXPORT std::string request(std::string_view host, std::uint16_t port,
                                                  std::string_view message,
                                                  const RequestOptions& options = {});

// Line mode, client side: relays in_fd to the server and the server's bytes to out_fd as they
// arrive, until the server closes. When in_fd ends, the connection is half-closed. A non-zero
// reply_timeout bounds each wait for a line still owed: the greeting, the reply to a line sent,
// or the server's close after the input ended; waiting for input is never timed. Throws
// std::system_error on failure, also when the server closes before answering every line; a
// failed write to out_fd is that write's error ("write output: Broken pipe"), no reset.
SOCKECHO_EXPORT void line_session(Connection& connection, int in_fd, int out_fd,
                                  std::chrono::milliseconds reply_timeout);

}  // namespace sockecho
