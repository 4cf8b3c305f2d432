// sockecho: a blocking TCP server with a pluggable handler.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"

namespace sockecho {

// The reply a handler builds: byte pieces written back in order, gathered into one system call.
class Reply {
 public:
  // Appends a copy of bytes.
  void append(std::string_view bytes);
  // Appends bytes without copying them. They must stay valid until the reply is sent, after the
  // handler returns: a part of the request, or data that outlives the server (a prefix it holds).
  void append_ref(std::string_view bytes);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  // Empties the reply, keeping its memory for the next one.
  void clear() noexcept;
  // Replaces `out` with the pieces in order; valid until the reply next changes.
  void pieces(std::vector<std::string_view>& out) const;

 private:
  struct Piece {
    const char* data;  // nullptr: the piece lives in owned_ at offset
    std::size_t offset;
    std::size_t size;
  };
  std::vector<Piece> pieces_;
  std::string owned_;
  std::size_t size_ = 0;
};

// Turns one request (echo mode: everything the client sent; line mode: one line, without its
// '\n') into a reply. Called concurrently from every worker thread. An exception it throws ends
// that connection unanswered (outcome "error") and the server goes on.
using Handler = std::function<void(std::string_view request, Reply& reply)>;

// The document's handler: the reply is prefix followed by the request, neither copied.
[[nodiscard]] Handler prefix_handler(std::string prefix);

enum class Mode {
  echo,  // read until the client half-closes, answer once, close
  line,  // greet, then answer each '\n'-terminated line until the client closes
};

// The document's reply prefix, "数据是 " in UTF-8.
inline constexpr std::string_view kDefaultPrefix = "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ";
inline constexpr unsigned kDefaultWorkers = 16;
inline constexpr std::chrono::seconds kDefaultTimeout{30};
inline constexpr std::size_t kDefaultMaxBytes = std::size_t{64} << 20;
inline constexpr std::string_view kDefaultGreeting = "connect";

struct ServerOptions {
  Mode mode = Mode::echo;
  // Connections served at once, one thread each; 1 is the document's strictly serial loop.
  unsigned workers = kDefaultWorkers;
  // Longest wait for any single read or write of a connection; zero waits forever. Binding the
  // listener with the same ListenOptions::connection_timeout saves two system calls per
  // connection, and lets the server free spare request buffers after a timeout without work.
  std::chrono::milliseconds timeout = kDefaultTimeout;
  // Largest request (line mode: line) accepted; a larger one is closed unanswered. 0: no limit.
  std::size_t max_bytes = kDefaultMaxBytes;
  // Line mode's first line (sent followed by '\n').
  std::string greeting{kDefaultGreeting};
  // Where start, stop and per-connection lines go; quiet by default.
  Logger log;
  // Called on the worker thread after each connection closes.
  std::function<void(const ConnectionRecord&)> on_connection;
};

// Live counters, read with Server::stats().
struct ServerStats {
  std::uint64_t accepted = 0;
  std::uint64_t active = 0;
  std::uint64_t ok = 0;
  std::uint64_t timeout = 0;
  std::uint64_t too_large = 0;
  std::uint64_t reset = 0;
  std::uint64_t error = 0;
};

// Serves a listener with `workers` threads, each blocking in accept() on the shared socket and
// then serving its connection to the end; while all are busy, new connections wait in the
// kernel's backlog. stop() from any thread ends run() cleanly.
class Server {
 public:
  // Throws std::invalid_argument when options.workers is 0.
  Server(Listener listener, Handler handler, ServerOptions options = {});
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;
  ~Server() = default;

  [[nodiscard]] const Address& address() const noexcept { return listener_.address(); }
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }

  // Serves until stop(), then returns once every connection in flight has finished (each bounded
  // by the timeout). The calling thread is one of the workers. Rethrows a failure that stopped
  // the server (such as an unusable listener). Call it once.
  void run();
  // Stops accepting at once and lets run() return when in-flight connections are done. Safe from
  // any thread, before or during run(), any number of times.
  void stop() noexcept;

  [[nodiscard]] ServerStats stats() const noexcept;

 private:
  struct Worker;
  void work() noexcept;
  void serve(Connection& connection, Worker& worker);
  bool serve_echo(Connection& connection, Worker& worker);
  bool serve_line(Connection& connection, Worker& worker);
  void send(Connection& connection, Worker& worker);
  bool pause_after_accept_failure(const std::system_error& error);
  void fail(std::exception_ptr error) noexcept;
  void take_spare(Buffer& buffer);
  void keep_or_free(Buffer& buffer);
  void free_spares() noexcept;

  Listener listener_;
  Handler handler_;
  ServerOptions options_;

  std::atomic<bool> stopping_{false};
  std::mutex mutex_;  // guards fatal_ and the stop wake-up
  std::condition_variable stopped_;
  std::exception_ptr fatal_;

  // Request buffers grown by large requests, not in use: the next large request reuses one
  // instead of faulting in fresh memory page by page. There are never more than the largest
  // number of large requests served at once, and they are freed once a worker has waited a
  // whole timeout without a connection.
  std::mutex spare_mutex_;
  std::vector<Buffer> spare_;
  std::atomic<std::size_t> spare_count_{0};  // spare_.size(), readable without the lock

  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> active_{0};
  std::array<std::atomic<std::uint64_t>, kOutcomeCount> outcomes_{};  // indexed by Outcome
};

}  // namespace sockecho
