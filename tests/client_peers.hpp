// Servers that test the client's side of the protocols: one that streams its reply while the
// request is still arriving, and ones that end a connection early, with a reset or a clean
// close. Protocols for test::ServerThread, shared by client_test and client_program_test.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <string>
#include <vector>

#include "sockecho/error.hpp"
#include "sockecho/session.hpp"

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

}  // namespace sockecho::test
