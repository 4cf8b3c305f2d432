// sockecho: one connected stream socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/buffer.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/export.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

// A connected socket and the address of its peer. The socket is non-blocking: every wait is a
// poll() against the connection's Deadline, so a limit means the same for a read, a write and a
// wait of the caller's own. Every call retries EINTR, loops over partial transfers, never raises
// SIGPIPE, and throws std::system_error naming the operation and the peer, e.g.
// "read 127.0.0.1:50312: Connection reset by peer"; a limit that runs out is ETIMEDOUT
// ("Connection timed out").
//
// Progress, which starts the idle limit over, is a byte read, or room freed in the send buffer:
// bytes the peer took, not bytes the kernel queued. A writer blocked on a full send buffer looks
// at the kernel's count of unsent bytes every kProgressCheck, so a peer that stops reading is
// cut at most idle + kProgressCheck after it last took a byte, however much the buffers absorbed.
//
// One thread may read while another writes. Each direction tells the deadline of its progress
// when it next waits, so a reader's idle limit hears of a writer's progress at the writer's next
// wait, not at every byte.
class SOCKECHO_EXPORT Connection {
 public:
  // How often a blocked writer checks whether the peer took bytes.
  static constexpr std::chrono::milliseconds kProgressCheck{500};

  // Marks a socket that is already non-blocking (accept4 or socket with SOCK_NONBLOCK).
  struct NonBlocking {};

  Connection() noexcept = default;
  // Takes ownership of a connected socket and makes it non-blocking. Throws std::system_error.
  Connection(Fd socket, const Address& peer);
  // Takes ownership of a connected socket that is already non-blocking.
  Connection(Fd socket, const Address& peer, NonBlocking /*unused*/) noexcept;

  [[nodiscard]] bool is_open() const noexcept { return socket_.valid(); }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }
  [[nodiscard]] const Address& peer() const noexcept { return peer_; }
  // This end's address (getsockname). Throws std::system_error.
  [[nodiscard]] Address local() const;
  // Who the peer of a Unix-domain connection is (pid, uid, gid): as the Listener recorded them
  // on peer() at accept, else asked of the socket (SO_PEERCRED; a client learns the server's
  // this way). std::nullopt for TCP, or once closed.
  [[nodiscard]] std::optional<Credentials> peer_credentials() const;

  // The idle limit: how long the connection may go without progress (zero: forever). Its clock
  // starts now. The same as deadline().set_idle().
  void set_timeout(std::chrono::milliseconds timeout) noexcept { deadline_.set_idle(timeout); }
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return deadline_.idle(); }
  // Every limit of this connection, the whole-request end included.
  [[nodiscard]] Deadline& deadline() noexcept { return deadline_; }
  [[nodiscard]] const Deadline& deadline() const noexcept { return deadline_; }

  // Reads at most `size` bytes, waiting until at least one arrives; returns 0 at end of stream.
  std::size_t read_some(char* data, std::size_t size);
  // One read that never waits: the bytes read (0 at end of stream), or std::nullopt when none
  // are there yet.
  std::optional<std::size_t> try_read(char* data, std::size_t size);

  // Reads once into buffer's free room, first growing the buffer (doubling, from 64 KiB) when it
  // is full, but never so that it holds more than `limit` bytes (0: no limit; then limit must
  // exceed buffer.size()). Returns the bytes read, 0 at end of stream.
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
  // One gathered write that never waits: returns how many bytes of the parts (in order) the
  // kernel took, 0 when the send buffer is full.
  std::size_t try_write(const std::string_view* parts, std::size_t count);

  // Where a write of several parts has got to: parts[index] is the first not fully written, and
  // `offset` of its bytes are.
  struct Progress {
    std::size_t index = 0;
    std::size_t offset = 0;
  };
  // Writes what the kernel takes now of the parts from `at` on, without waiting, looping over
  // partial writes and moving `at` past what was written. True once every byte is written;
  // false when the send buffer is full (wait for POLLOUT, then call again with the same `at`).
  bool write_some(const std::string_view* parts, std::size_t count, Progress& at);

  // Waits until the socket is ready for `events` (POLLIN, POLLOUT) or has failed, within the
  // limits; `operation` names the wait in the ETIMEDOUT error.
  void wait(short events, const char* operation);
  // Waits, within the limits, until there is something to read (bytes, the end, an error): true;
  // or until `stop_fd` (a descriptor that becomes readable for good, such as
  // ServerCore::stop_fd(); -1: none) is readable first: false, nothing read.
  bool wait_readable_unless(int stop_fd);
  // Waits, within the limits, until there is something to read: true; or until `until` passes
  // first: false, nothing read (a limit that runs out before `until` still throws).
  bool wait_readable_until(Clock::time_point until);

  // Half-closes: tells the peer no more data follows (shutdown SHUT_WR) while still reading.
  void close_write();
  // Closes the socket now.
  void close() noexcept { socket_.reset(); }
  // Closes the socket with a reset (RST) instead of an orderly end of stream, discarding what
  // is unsent (SO_LINGER of zero): for a connection that ends without its whole reply, so the
  // peer can never take the end for an empty or complete answer.
  void abort() noexcept;

  // Bytes moved so far, including those of a transfer that later failed.
  [[nodiscard]] std::uint64_t bytes_read() const noexcept { return bytes_read_; }
  [[nodiscard]] std::uint64_t bytes_written() const noexcept { return bytes_written_; }

 private:
  [[noreturn]] void fail(const char* operation, int err) const;
  bool wait_unless(short events, int stop_fd, const char* operation,
                   Clock::time_point give_up = Clock::time_point::max());
  std::size_t send_parts(const std::string_view* parts, std::size_t count, std::size_t skip);
  [[nodiscard]] int unsent_bytes() const noexcept;

  Fd socket_;
  Address peer_;
  Deadline deadline_;
  // A read (a write) moved bytes since the deadline last heard of progress. Marked here and
  // handed to the deadline only when a wait begins, so a transfer that never waits costs no
  // clock read. One flag per direction: a reading and a writing thread each touch only theirs.
  bool read_progressed_ = false;
  bool write_progressed_ = false;
  std::uint64_t bytes_read_ = 0;
  std::uint64_t bytes_written_ = 0;
};

}  // namespace sockecho
