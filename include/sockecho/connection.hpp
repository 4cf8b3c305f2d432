// sockecho: one connected TCP stream.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/buffer.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

// A connected TCP socket and the address of its peer. Every call retries EINTR, loops over
// partial transfers, never raises SIGPIPE, and throws std::system_error naming the operation and
// the peer, e.g. "read 127.0.0.1:50312: Connection reset by peer". With a timeout set, a read or
// write that waits longer fails with ETIMEDOUT ("Connection timed out").
class Connection {
 public:
  Connection() noexcept = default;
  // Takes ownership of a connected socket.
  Connection(Fd socket, const Address& peer) noexcept;
  // Takes ownership of a connected socket whose reads and writes already time out after
  // `timeout` (one accepted from a Listener with a connection timeout, which it inherits).
  Connection(Fd socket, const Address& peer, std::chrono::milliseconds timeout) noexcept;

  [[nodiscard]] bool is_open() const noexcept { return socket_.valid(); }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }
  [[nodiscard]] const Address& peer() const noexcept { return peer_; }

  // Limits how long any single read or write may wait for the peer; zero means forever.
  void set_timeout(std::chrono::milliseconds timeout);
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  // Reads at most `size` bytes, waiting until at least one arrives; returns 0 at end of stream.
  std::size_t read_some(char* data, std::size_t size);

  // Reads once into buffer's free room, first growing the buffer (doubling, from 64 KiB) when it is
  // full, but never so that it holds more than `limit` bytes (0: no limit; then limit must exceed
  // buffer.size()). Returns the bytes read, 0 at end of stream.
  std::size_t read_into(Buffer& buffer, std::size_t limit = 0);

  // Reads until the peer half-closes, appending to `buffer`. Returns true at end of stream, or
  // false as soon as the buffer holds more than max_bytes (then it holds max_bytes + 1 and the
  // rest is left unread); max_bytes 0 means no limit.
  bool read_to_end(Buffer& buffer, std::size_t max_bytes = 0);
  // Reads until the peer half-closes and returns the bytes; over max_bytes (if not 0) it throws
  // std::system_error with EMSGSIZE.
  std::string read_to_end_string(std::size_t max_bytes = 0);

  // Writes every byte, looping over partial writes.
  void write_all(std::string_view data);
  // Writes the parts in order as one stream, gathered into as few system calls as possible.
  void write_all(const std::string_view* parts, std::size_t count);

  // Half-closes: tells the peer no more data follows (shutdown SHUT_WR) while still reading.
  void close_write();
  // Closes the socket now.
  void close() noexcept { socket_.reset(); }

  // Bytes moved so far, including those of a transfer that later failed.
  [[nodiscard]] std::uint64_t bytes_read() const noexcept { return bytes_read_; }
  [[nodiscard]] std::uint64_t bytes_written() const noexcept { return bytes_written_; }

 private:
  [[noreturn]] void fail(const char* operation, int err) const;

  Fd socket_;
  Address peer_;
  std::chrono::milliseconds timeout_{0};
  std::uint64_t bytes_read_ = 0;
  std::uint64_t bytes_written_ = 0;
};

}  // namespace sockecho
