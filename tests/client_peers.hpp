// Servers that test the client's side of the protocols: one that streams its reply while the
// request is still arriving, and ones that end a connection early, with a reset or a clean
// close, or before the request has ended. Protocols for test::ServerThread, shared by
// client_test and client_program_test.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "sockecho/error.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/protocol.hpp"
#include "support.hpp"

namespace sockecho::test {

// Ends the connection with a reset (RST): SO_LINGER {1, 0}, so the server's close() discards
// what is unsent and unread instead of a clean FIN.
[[noreturn]] inline void reset(Connection& connection, const std::string& why) {
  const linger abort{1, 0};
  if (::setsockopt(connection.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort) != 0) {
    throw os_error(errno, "setsockopt SO_LINGER");
  }
  throw ConnectionError(Outcome::error, why);
}

// Writes back every chunk as soon as it reads it, as `cat` (or socat's EXEC:cat) does, until
// the client half-closes.
class Streaming final : public Protocol {
 public:
  void serve(Connection& connection, Workspace& /*workspace*/) override {
    std::vector<char> chunk(std::size_t{64} * 1024);
    for (;;) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) return;
      connection.write_all(std::string_view(chunk.data(), n));
    }
  }
  [[nodiscard]] std::string describe() const override { return "mode=streaming"; }
};

// Reads `bytes` bytes of the request (or all of it, if shorter), then resets the connection
// unanswered, as sockecho-server does past --max-bytes.
class ResetAfter final : public Protocol {
 public:
  explicit ResetAfter(std::size_t bytes) : bytes_(bytes) {}
  void serve(Connection& connection, Workspace& /*workspace*/) override {
    std::vector<char> chunk(bytes_ + 1);
    std::size_t got = 0;
    while (got < bytes_) {
      const std::size_t n = connection.read_some(chunk.data() + got, bytes_ - got);
      if (n == 0) break;
      got += n;
    }
    reset(connection, "reset after " + std::to_string(got) + " bytes");
  }
  [[nodiscard]] std::string describe() const override { return "mode=reset"; }

 private:
  std::size_t bytes_;
};

// Line mode that gives up early: greets, reads `read` lines, answers `answered` of them, then
// closes cleanly (nothing is left unread, so the close is a FIN) or resets.
class LinesThenClose final : public Protocol {
 public:
  LinesThenClose(std::size_t read, std::size_t answered, bool with_reset)
      : read_(read), answered_(answered), with_reset_(with_reset) {}
  void serve(Connection& connection, Workspace& /*workspace*/) override {
    connection.write_all("hi\n");
    std::string got;
    std::vector<char> chunk(4096);
    while (static_cast<std::size_t>(std::count(got.begin(), got.end(), '\n')) < read_) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) break;
      got.append(chunk.data(), n);
    }
    for (std::size_t i = 0; i < answered_; ++i) connection.write_all("re\n");
    if (with_reset_) reset(connection, "reset in line mode");
  }
  [[nodiscard]] std::string describe() const override { return "mode=lines-then-close"; }

 private:
  std::size_t read_;
  std::size_t answered_;
  bool with_reset_;
};

// Ends the connection before the request does: reads `bytes` bytes of it (or all of it, if
// shorter), then either half-closes and reads on until the client closes, counting every byte
// that arrived (received()), or returns, so the server closes: a reset when bytes are left
// unread, else an end of stream.
class EndsFirst final : public Protocol {
 public:
  enum class How { half_close, close };
  EndsFirst(std::size_t bytes, How how) : bytes_(bytes), how_(how) {}
  void serve(Connection& connection, Workspace& /*workspace*/) override {
    std::vector<char> chunk(std::size_t{64} * 1024);
    std::uint64_t got = 0;
    while (got < bytes_) {
      const std::size_t n =
          connection.read_some(chunk.data(), std::min(chunk.size(), bytes_ - got));
      if (n == 0) break;
      got += n;
    }
    if (how_ == How::close) return;
    connection.close_write();
    // Nothing more is read until the test says its client is done: were the rest drained now, a
    // client could send it all before it noticed the end and rightly take the request for whole.
    {
      std::unique_lock<std::mutex> lock(mutex_);
      (void)released_cv_.wait_for(lock, kPatience, [this] { return released_; });
    }
    for (;;) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) break;
      got += n;
    }
    received_ = got;
  }
  [[nodiscard]] std::string describe() const override { return "mode=ends-first"; }
  // Bytes of the request that arrived in all (half_close), once the connection has finished.
  [[nodiscard]] std::uint64_t received() const noexcept { return received_; }
  // The client has seen the end (half_close): the server reads the rest and finishes.
  void release() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
  }

 private:
  std::size_t bytes_;
  How how_;
  std::atomic<std::uint64_t> received_{0};
  std::mutex mutex_;
  std::condition_variable released_cv_;
  bool released_ = false;
};

// A loopback listener with a small receive buffer (inherited by what it accepts), so little of
// a request is in flight: what a client gets ahead of the server is its own send buffer.
inline Listener small_window_listener() {
  Listener listener = Listener::bind("127.0.0.1", 0);
  const int size = 4096;
  if (::setsockopt(listener.fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0) {
    throw os_error(errno, "setsockopt SO_RCVBUF");
  }
  return listener;
}

// A request size no client send buffer can take whole (twice the largest the kernel grows one
// to, tcp_wmem's third field; 8 MiB at least): against small_window_listener(), such a request
// is still being sent when the server ends the connection.
inline std::size_t larger_than_any_send_buffer() {
  std::ifstream wmem("/proc/sys/net/ipv4/tcp_wmem");
  std::size_t least = 0;
  std::size_t initial = 0;
  std::size_t most = 0;
  wmem >> least >> initial >> most;
  return std::max(std::size_t{8} << 20, 2 * most);
}

}  // namespace sockecho::test
