// sockecho: the client side of the protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sockecho/connection.hpp"

namespace sockecho {

struct ConnectOptions {
  // Bounds the attempt (all addresses together); zero waits as long as the kernel does.
  std::chrono::milliseconds timeout{0};
  // The local address to connect from (its port 0: any); unset: the kernel's choice.
  std::optional<Address> source;
};

// Connects to one address. The connection is returned with no limits set. Throws
// std::system_error, e.g. "connect 127.0.0.1:12387: Connection refused".
[[nodiscard]] Connection connect(const Address& address, const ConnectOptions& options = {});

// Connects to host:port, trying every address the name resolves to, in order, until one
// accepts. A non-zero timeout bounds the whole attempt. The connection is returned with no
// limits set. Throws std::system_error, e.g. "connect 127.0.0.1:12387: Connection refused"
// (every address tried is named).
[[nodiscard]] Connection connect(std::string_view host, std::uint16_t port,
                                 std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

struct RequestOptions {
  // Bounds connecting and each wait for the server; zero means wait forever.
  std::chrono::milliseconds timeout{0};
  // Largest reply accepted (EMSGSIZE beyond it); zero means no limit.
  std::size_t max_reply = 0;
};

// One exchange of the echo protocol: connect, send the whole message, half-close, and return
// everything the server sends until it closes.
[[nodiscard]] std::string request(std::string_view host, std::uint16_t port,
                                  std::string_view message, const RequestOptions& options = {});

// Sends everything readable from in_fd (a file, a pipe, stdin) until its end; returns the byte
// count. `source` names in_fd in errors.
std::uint64_t send_from_fd(Connection& connection, int in_fd, std::string_view source);

// Copies what the server sends to out_fd until the server closes; returns the byte count.
std::uint64_t receive_to_fd(Connection& connection, int out_fd);

// Line mode, client side: relays in_fd to the server and the server's bytes to out_fd as they
// arrive, until the server closes. When in_fd ends, the connection is half-closed. A non-zero
// reply_timeout bounds each wait for a line still owed: the greeting, the reply to a line sent,
// or the server's close after the input ended; waiting for input is never timed. Throws
// std::system_error on failure, also when the server closes before answering every line.
void line_session(Connection& connection, int in_fd, int out_fd,
                  std::chrono::milliseconds reply_timeout);

}  // namespace sockecho
