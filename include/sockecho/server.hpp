// sockecho: a blocking server that runs connections; the protocol is handed to it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"
#include "sockecho/session.hpp"

namespace sockecho {

inline constexpr unsigned kDefaultWorkers = 128;
// How long a worker beyond the first waits without a connection before it retires, when there
// is no idle limit to use for it.
inline constexpr std::chrono::seconds kIdleWithoutTimeout{30};
inline constexpr std::chrono::seconds kDefaultTimeout{30};

struct ServerOptions {
  // The most connections served at once, one thread each; 1 is the document's strictly serial
  // loop. Threads start as connections need them (one more whenever the last one waiting takes
  // a connection) and retire after an idle period (the timeout) without one, so a large number
  // costs nothing while idle.
  unsigned workers = kDefaultWorkers;
  // The idle limit of every connection the server accepts, whatever listener it came from
  // (bound, adopted from a service manager, or a library user's): closed when it makes no
  // progress for this long (see Connection). Zero: none. It is also how long a worker waits
  // without a connection before the protocol may free what it keeps for reuse.
  std::chrono::milliseconds timeout = kDefaultTimeout;
  // Connections at once from one client address (an IPv4 address, an IPv6 address; IPv4-mapped
  // IPv6 peers count as their IPv4 address; over a Unix socket, one user id:
  // Address::source_key()). One over it is reset as soon as it is accepted, outcome refused with
  // reason per_source. Zero: no limit.
  unsigned max_per_source = 0;
  // Where start, stop and per-connection lines go; quiet by default.
  Logger log;
  // Called on the worker thread after each connection closes. An exception it throws is logged
  // and contained, like a handler's.
  std::function<void(const ConnectionRecord&)> on_connection;
};

// Live counters, read with Server::stats().
struct ServerStats {
  std::uint64_t accepted = 0;
  std::uint64_t active = 0;
  std::uint64_t workers = 0;  // threads running now, busy or waiting for a connection
  std::array<std::uint64_t, kOutcomeCount> outcomes{};  // indexed by Outcome
  std::uint64_t bytes_in = 0;                           // read from finished connections
  std::uint64_t bytes_out = 0;                          // written to finished connections

  [[nodiscard]] std::uint64_t count(Outcome outcome) const noexcept {
    return outcomes[static_cast<std::size_t>(outcome)];
  }
};

// "accepted=3 active=1 ok=2 timeout=0 ... error=0 bytes_in=12 bytes_out=32": the counters as
// key=value words, for a log line.
[[nodiscard]] std::string format_stats(const ServerStats& stats);

// Serves a listener with up to `workers` threads, each blocking in accept() on the shared socket
// and then serving its connection to the end with the protocol; while `workers` are busy, new
// connections wait in the kernel's backlog. stop() from any thread ends run() cleanly.
class Server {
 public:
  // Throws std::invalid_argument when options.workers is 0 or there is no protocol, and
  // std::system_error when the listener cannot take the idle timeout.
  Server(Listener listener, std::shared_ptr<Protocol> protocol, ServerOptions options = {});
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;
  // Ends a stop_after() wait (with a stop) if one is still running.
  ~Server();

  [[nodiscard]] const Address& address() const noexcept { return listener_.address(); }
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }

  // Serves until stop(), then returns once every connection in flight has finished (each bounded
  // by its limits). The calling thread is one of the workers. Rethrows a failure that stopped
  // the server (such as an unusable listener). Call it once.
  void run();
  // Stops accepting at once and lets run() return when in-flight connections are done. Safe from
  // any thread, before or during run(), any number of times.
  void stop() noexcept;
  // A stop announced `delay` ahead: stopping() turns true now (so a health check, GET /health,
  // answers 503 and a load balancer takes the server out), but connections are still accepted
  // and served until the delay is over; then stop(). A later stop() (or stop_after() of
  // zero) ends the wait early; a later non-zero delay changes nothing. Zero: stop() now.
  void stop_after(std::chrono::milliseconds delay) noexcept;

  [[nodiscard]] ServerStats stats() const noexcept;
  // True once stop() has been called (or a failure stopped it): a load balancer's health check
  // then says so while the connections in flight finish.
  [[nodiscard]] bool stopping() const noexcept { return announced_.load() || stopping_.load(); }

 private:
  void work(bool permanent) noexcept;
  void add_worker() noexcept;
  bool retire() noexcept;
  void reap_retired() noexcept;  // with threads_mutex_ held
  void serve(Connection& connection, Workspace& workspace);
  void finish(ConnectionRecord& record) noexcept;
  // Counts the connection against its source's limit: false (and not counted) when over it.
  bool admit(const Address& peer);
  void release(const Address& peer) noexcept;
  bool pause_after_accept_failure(const std::system_error& error);
  void fail(std::exception_ptr error) noexcept;

  Listener listener_;
  std::shared_ptr<Protocol> protocol_;
  ServerOptions options_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> announced_{false};  // stop_after() called: stopping() is true already
  std::thread delayed_stop_;            // stop_after()'s wait, joined by run() or the destructor
  std::mutex mutex_;                    // guards fatal_ and the stop wake-up
  std::condition_variable stopped_;
  std::exception_ptr fatal_;
  // Accept pauses not yet in a log line, and when the last "pausing accept" line was written
  // (guarded by mutex_): at most one such line a second, however many workers pause.
  std::uint64_t unlogged_pauses_ = 0;
  std::chrono::steady_clock::time_point pause_logged_{};

  // The workers besides the one run() is: started on demand, joined when they retire or at the
  // end of run().
  mutable std::mutex threads_mutex_;
  std::vector<std::thread> threads_;
  std::vector<std::thread::id> retired_;  // left work(), not yet joined
  unsigned running_ = 0;                  // run()'s thread included
  std::atomic<unsigned> waiting_{0};      // threads in accept_or_idle() now

  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> active_{0};
  std::array<std::atomic<std::uint64_t>, kOutcomeCount> outcomes_{};  // indexed by Outcome
  // Connections open per source address, while max_per_source is set.
  std::mutex sources_mutex_;
  std::unordered_map<std::string, unsigned> sources_;
  std::atomic<std::uint64_t> bytes_in_{0};
  std::atomic<std::uint64_t> bytes_out_{0};
};

}  // namespace sockecho
