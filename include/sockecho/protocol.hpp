// sockecho: protocols, the framing between a connection and a handler (handler.hpp). A Server runs
// connections; a Protocol, handed to it, serves each one (Python's socketserver: server x
// handler; Go's net/http: Server x Handler). echo_protocol() and line_protocol() are sockecho's
// two; a protocol of your own is a class with serve().
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sockecho/buffer.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/export.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

inline constexpr std::size_t kDefaultMaxBytes = std::size_t{64} << 20;
inline constexpr std::size_t kDefaultMaxTotalBytes = std::size_t{1} << 30;
inline constexpr std::string_view kDefaultGreeting = "connect";
inline constexpr std::chrono::seconds kDefaultRequestTimeout{30};

// Thrown by a protocol to stop serving a connection it cannot go on with, unanswered, with an
// outcome of its choosing (too_large, say) and a message for the log; `fields` are key=value
// words for its log line after the outcome. The connection is reset. (An answer that is no
// success, or a handler's failure, is a value on the Reply, never an exception.)
class SOCKECHO_EXPORT ConnectionError : public std::runtime_error {
 public:
  ConnectionError(Outcome outcome, const std::string& what, std::string fields = {})
      : std::runtime_error(what), outcome_(outcome), fields_(std::move(fields)) {}
  [[nodiscard]] Outcome outcome() const noexcept { return outcome_; }
  [[nodiscard]] const std::string& fields() const noexcept { return fields_; }

 private:
  Outcome outcome_;
  std::string fields_;
};

// What one worker thread reuses from connection to connection, for any protocol to use.
struct SOCKECHO_EXPORT Workspace {
  Buffer buffer;  // request bytes
  Reply reply;
  std::vector<std::string_view> pieces;
  // Readable once the server stops (ServerCore::stop_fd()); -1: no server's. A protocol that
  // waits between requests waits on it too, and ends the session at a stop.
  int stop_fd = -1;
  // Set by a server with a waiting room: send() writes what the kernel takes now and leaves
  // the rest of the reply in `unsent` (copied once), for the room to write as the client reads;
  // while `unsent` holds bytes, a further send() adds its reply behind them without writing.
  bool defer = false;
  Buffer unsent;

  // Writes `reply` to the connection, gathered into as few system calls as possible.
  void send(Connection& connection);
};

// What a protocol declares so that a server may read its requests itself and hold a connection
// whose request is not complete without a worker (the waiting room; see docs/ARCHITECTURE.md).
struct Framing {
  // What one request is: every byte up to the client's half-close, one to a connection (the
  // echo protocol); or a line up to its '\n', any number to a connection (the line protocol),
  // which waits between them without a worker.
  enum class Unit { connection, line };
  Unit unit = Unit::connection;
  // Largest request; one byte more ends the connection unanswered, outcome too_large. 0: none.
  std::size_t max_bytes = 0;
  // From a request's start (the accept; a line's first byte) to its end; on expiry, outcome
  // timeout. Zero: none.
  std::chrono::milliseconds request_timeout{0};
  // Where the bytes of a request held without a worker are charged, from its first byte.
  std::shared_ptr<MemoryBudget> budget;
};

// What answer() did with the bytes it was given.
struct Answered {
  std::size_t used = 0;  // bytes answered, from the front; the rest is a request not complete
  bool done = true;      // the connection is over: its last reply sent, or one that ends it
};

// Serves connections of one protocol. One object serves every worker of a server at once.
class SOCKECHO_EXPORT Protocol {
 public:
  Protocol() = default;
  Protocol(const Protocol&) = delete;
  Protocol& operator=(const Protocol&) = delete;
  Protocol(Protocol&&) = delete;
  Protocol& operator=(Protocol&&) = delete;
  virtual ~Protocol() = default;

  // Serves one accepted connection to its end; the server closes it afterwards. The server
  // clears workspace.reply first; when serve() returns, that reply's outcome is the
  // connection's: ok, an answer that is no success (closed cleanly), or no answer (reset).
  // A ConnectionError ends it with its outcome; a std::system_error is classified by its code
  // (ETIMEDOUT: timeout; ECONNRESET, EPIPE: reset); anything else is an error. The connection's
  // limits are set when it arrives here.
  virtual void serve(Connection& connection, Workspace& workspace) = 0;

  // The words for the server's start line, e.g. "mode=echo max_bytes=67108864".
  [[nodiscard]] virtual std::string describe() const = 0;

  // Before serving, the server says how often it will call idle(): each time one of its workers
  // has waited `period` without a connection; zero: never.
  virtual void idle_every(std::chrono::milliseconds period) noexcept { (void)period; }
  // A worker has been idle: a chance to free memory kept for reuse (logging what, on `log`).
  virtual void idle(const Logger& log) noexcept { (void)log; }

  // Bytes of request memory the protocol holds now (in use and kept for reuse) that count
  // against its budget; 0 for a protocol without one.
  [[nodiscard]] virtual std::size_t buffered_bytes() const noexcept { return 0; }

  // A protocol that can be framed by the server declares how (see Framing); then the server
  // reads each request itself and calls answer() instead of serve(). std::nullopt (the default,
  // and what a protocol of a library user's own gets unless it says otherwise): serve() runs,
  // and holds a worker, for the whole connection.
  [[nodiscard]] virtual std::optional<Framing> framing() const { return std::nullopt; }
  // Starts a connection before its first request is read (the line protocol's greeting).
  // Called only for a protocol that declares framing().
  virtual void open(Connection& connection, Workspace& workspace) {
    (void)connection;
    (void)workspace;
  }
  // Answers what the server has read of a connection (`bytes`, valid during the call; `at_end`
  // when the client has half-closed after them), leaving the outcome in workspace.reply as
  // serve() does: Unit::connection gets the whole request once, at its end; Unit::line gets
  // every complete line and the start of the next, and answers the lines. Called only for a
  // protocol that declares framing(); the default throws std::logic_error.
  virtual Answered answer(Connection& connection, Workspace& workspace, std::string_view bytes,
                          bool at_end);
};

// Limits of the echo and line protocols.
struct SOCKECHO_EXPORT Limits {
  // Largest request (line mode: line) accepted; a larger one ends the connection unanswered,
  // outcome too_large. 0: no limit.
  std::size_t max_bytes = kDefaultMaxBytes;
  // Longest time to receive one whole request, however slowly its bytes trickle in (echo: from
  // the start of the connection to the client's half-close; line: from a line's first byte to
  // its '\n'). On expiry the connection ends unanswered, outcome timeout. Zero: no limit.
  std::chrono::milliseconds request_timeout = kDefaultRequestTimeout;
  // Most request memory held at once by all the protocol's connections together: each worker
  // keeps a buffer of up to 1 MiB of its own, and every larger buffer (in use, or kept for the
  // next large request) counts against this. A request that would need more is ended unanswered,
  // outcome too_large, as one over max_bytes is. 0: no limit.
  std::size_t max_total_bytes = kDefaultMaxTotalBytes;
  // The budget those buffers are charged to, when it is shared with other holders of memory (a
  // job queue's inputs: one bound for both); its limit then stands for max_total_bytes. Unset:
  // a budget of the protocol's own, of max_total_bytes.
  std::shared_ptr<MemoryBudget> budget{};
};

// The echo protocol: read until the client half-closes, answer once.
[[nodiscard]] SOCKECHO_EXPORT std::shared_ptr<Protocol> echo_protocol(Handler handler,
                                                                      Limits limits = {});

// The line protocol: greet (greeting + '\n'), then answer every '\n'-terminated
// line, each reply followed by '\n', until the client closes; a last line without '\n' is
// answered too. At the server's stop (Workspace::stop_fd), the session answers every complete
// line it holds and the one already begun (read to its end within the request deadline), then
// closes, outcome ok: a stop is bounded whatever the client does. A line whose reply is not ok is
// the last: an answer that is no success is sent and the connection closed; a failed one ends it
// with a reset after the replies before it are sent (a client that has not read those yet may see
// the reset first).
[[nodiscard]] SOCKECHO_EXPORT std::shared_ptr<Protocol> line_protocol(
    Handler handler, Limits limits = {}, std::string greeting = std::string(kDefaultGreeting));

}  // namespace sockecho
