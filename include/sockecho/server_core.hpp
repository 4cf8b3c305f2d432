// sockecho: what every server has, whatever it serves (connections from a Listener, datagrams
// from a DatagramSocket): workers started on demand and retired when idle, the stop (at once or
// announced ahead), the pause when accepting fails for want of descriptors or memory, failure
// lines at most one a second, and counters by Outcome. Server and DatagramServer are this core
// with a transport; the metrics listener is a Server with the metrics protocol.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/exposition.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

// What a server serves: connections over a stream socket, or datagrams.
enum class Transport { stream, datagram };

// Live counters, read with stats(). Counters per outcome are indexed by Outcome.
struct SOCKECHO_EXPORT ServerStats {
  Transport transport = Transport::stream;
  std::uint64_t accepted = 0;  // connections accepted, or datagrams received
  std::uint64_t active = 0;    // being served now
  std::uint64_t workers = 0;   // threads running now, busy or waiting
  std::array<std::uint64_t, kOutcomeCount> outcomes{};
  std::uint64_t bytes_in = 0;   // read from finished connections, or of every datagram
  std::uint64_t bytes_out = 0;  // written to finished connections, or of every reply sent

  [[nodiscard]] std::uint64_t count(Outcome outcome) const noexcept {
    return outcomes[static_cast<std::size_t>(outcome)];
  }
};

// The counters as key=value words for a log line: "accepted=3 active=1 ok=2 timeout=0 ...
// error=0 bytes_in=12 bytes_out=32" for a stream server, "datagrams=3 ok=2 ... bytes_out=32" for
// a datagram one.
[[nodiscard]] SOCKECHO_EXPORT std::string format_stats(const ServerStats& stats);
// "ok=2 timeout=0 ... error=0": every outcome's count, for a log line.
[[nodiscard]] SOCKECHO_EXPORT std::string format_outcomes(const ServerStats& stats);

// At most one line a second of some kind of failure, however often it happens: pass() says
// whether this one may be written, and how many happened since the last one written (this one
// included) over how long. Safe from any thread.
class SOCKECHO_EXPORT FailureLines {
 public:
  struct Pass {
    bool write = false;
    std::uint64_t count = 0;             // failures since the last line, this one included
    std::chrono::milliseconds since{0};  // since the last line; zero for the first
  };
  [[nodiscard]] Pass pass() noexcept;

 private:
  std::mutex mutex_;
  std::uint64_t unwritten_ = 0;
  std::chrono::steady_clock::time_point written_{};
};

class SOCKECHO_EXPORT ServerCore : public Collector {
 public:
  ServerCore(const ServerCore&) = delete;
  ServerCore& operator=(const ServerCore&) = delete;
  ServerCore(ServerCore&&) = delete;
  ServerCore& operator=(ServerCore&&) = delete;
  // Ends a stop_after() wait, if one is still running (run() was never called).
  virtual ~ServerCore();

  // Serves until stop(), then returns once every request in flight has finished (each bounded
  // by its limits). The calling thread is one of the workers. Rethrows a failure that stopped
  // the server (such as an unusable listener or socket). Call it once.
  void run();
  // Stops taking new work at once and lets run() return when what is in flight is done. Safe
  // from any thread, before or during run(), any number of times.
  void stop() noexcept;
  // A stop announced `delay` ahead: stopping() turns true now (so a health check, GET /health,
  // answers 503 and a load balancer takes the server out), but work is still taken and served
  // until the delay is over; then stop(). A later stop() (or stop_after() of zero) ends the wait
  // early; a later non-zero delay changes nothing. Zero: stop() now.
  void stop_after(std::chrono::milliseconds delay) noexcept;
  // True once stop() or stop_after() has been called (or a failure stopped it).
  [[nodiscard]] bool stopping() const noexcept { return announced_.load() || stopping_.load(); }
  // A descriptor that becomes readable, for good, when stop() takes effect (after a
  // stop_after() delay): for a protocol that waits between requests to wait on too, so that a
  // session which would go on without end (line mode) ends at a stop.
  [[nodiscard]] int stop_fd() const noexcept { return stop_event_.get(); }

  // Reads atomics only: a scrape never waits for a worker, nor a worker for a scrape.
  [[nodiscard]] ServerStats stats() const noexcept;
  [[nodiscard]] const Logger& log() const noexcept { return log_; }

 protected:
  // `workers`: the most threads serving at once (at least 1); `log`: where the start, stop and
  // failure lines go.
  ServerCore(Transport transport, unsigned workers, Logger log);

  // One worker thread's hold on the transport: what it took in wait() it serves in serve().
  class Worker {
   public:
    Worker() = default;
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    Worker(Worker&&) = delete;
    Worker& operator=(Worker&&) = delete;
    virtual ~Worker() = default;

    enum class Wait {
      taken,    // a connection or datagram to serve
      idle,     // a whole idle period without one
      stopped,  // the transport was interrupted
    };
    // Waits for the next connection or datagram. Throws std::system_error when the transport
    // fails (out of descriptors: the core pauses and waits again; anything else stops it).
    virtual Wait wait() = 0;
    // Serves what wait() took, to its end, counting it (counted()).
    virtual void serve() = 0;
    // The worker has waited a whole idle period: a chance to free what is kept for reuse.
    virtual void idle() noexcept {}
  };

  // A worker for a new thread.
  [[nodiscard]] virtual std::unique_ptr<Worker> make_worker() = 0;
  // Wakes every worker waiting in Worker::wait(), which then returns stopped.
  virtual void interrupt() noexcept = 0;
  // The start line's words after "start ", the stop line's after "stop ", and the line that
  // says the stop began.
  [[nodiscard]] virtual std::string describe() const = 0;
  [[nodiscard]] virtual std::string stop_words(const ServerStats& stats) const = 0;
  [[nodiscard]] virtual std::string stopping_line() const = 0;
  // Called by run() once every worker has ended, before the stop line.
  virtual void after_workers() noexcept {}

  // The counters: a connection or datagram arrived (it is active until counted()); one ended.
  void arrived() noexcept;
  void counted(Outcome outcome, std::uint64_t bytes_in, std::uint64_t bytes_out) noexcept;
  // Connections (datagrams) arrived and not yet counted: stats().active, without the rest.
  [[nodiscard]] std::uint64_t active() const noexcept {
    return active_.load(std::memory_order_relaxed);
  }
  // sockecho_up: 1 while the server serves, 0 once it is stopping (either transport's).
  void collect_up(Exposition& out) const;
  [[nodiscard]] unsigned max_workers() const noexcept { return max_workers_; }
  // Ends a stop_after() wait that run() never got to join, without calling the derived class:
  // what a derived destructor calls first, while the derived part is whole.
  void end_delayed_stop() noexcept;

 private:
  void work(bool permanent) noexcept;
  void add_worker() noexcept;
  bool retire() noexcept;
  bool pause_after_failure(const std::system_error& error);
  void fail(std::exception_ptr error) noexcept;

  Transport transport_;
  unsigned max_workers_;
  Logger log_;

  std::atomic<bool> stopping_{false};
  Fd stop_event_;                       // an eventfd, signalled once by stop()
  std::atomic<bool> announced_{false};  // stop_after() called: stopping() is true already
  std::thread delayed_stop_;            // stop_after()'s wait, joined by run() or the destructor
  std::mutex mutex_;                    // guards fatal_ and the stop wake-up
  std::condition_variable stopped_;
  std::exception_ptr fatal_;
  FailureLines pauses_;  // "pausing accept" lines

  // The workers besides the one run() is: started on demand, joined when they retire or at the
  // end of run().
  std::mutex threads_mutex_;
  std::vector<std::thread> threads_;
  std::vector<std::thread::id> retired_;  // left work(), not yet joined
  std::atomic<unsigned> running_{0};      // run()'s thread included; written under the mutex
  std::atomic<unsigned> waiting_{0};      // threads in Worker::wait() now

  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> active_{0};
  std::array<std::atomic<std::uint64_t>, kOutcomeCount> outcomes_{};
  std::atomic<std::uint64_t> bytes_in_{0};
  std::atomic<std::uint64_t> bytes_out_{0};
};

// Runs a server's run() on a thread of its own from construction; the destructor stops the
// server and joins the thread (nothing is detached). A failure that stopped the server is kept
// for rethrow().
class SOCKECHO_EXPORT ServingThread {
 public:
  explicit ServingThread(ServerCore& server);
  ServingThread(const ServingThread&) = delete;
  ServingThread& operator=(const ServingThread&) = delete;
  ServingThread(ServingThread&&) = delete;
  ServingThread& operator=(ServingThread&&) = delete;
  ~ServingThread();

  // Stops the server, joins the thread, and rethrows what stopped it, if anything did.
  void join();

 private:
  ServerCore& server_;
  std::exception_ptr failure_;
  std::thread thread_;
};

}  // namespace sockecho
