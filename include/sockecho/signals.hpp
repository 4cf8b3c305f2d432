// sockecho: stopping a server on SIGINT and SIGTERM without a signal handler.
#pragma once

#include <atomic>
#include <csignal>
#include <initializer_list>
#include <thread>

namespace sockecho {

class Server;

// Blocks the given signals and waits for them on a thread of its own (sigwait), so a signal can
// never race a blocking accept() or interrupt a system call. The first signal calls
// server.stop(); a second one is given back its default action (it ends the process), the way a
// second Ctrl-C is expected to. Construct it before starting any other thread: threads inherit
// the signal mask of the thread that creates them.
class StopOnSignals {
 public:
  explicit StopOnSignals(Server& server, std::initializer_list<int> signals = {SIGINT, SIGTERM});
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  StopOnSignals(StopOnSignals&&) = delete;
  StopOnSignals& operator=(StopOnSignals&&) = delete;
  // Ends the waiting thread. The signals stay blocked.
  ~StopOnSignals();

 private:
  void wait(Server& server) noexcept;

  sigset_t signals_{};
  int wake_signal_ = 0;
  std::atomic<bool> leaving_{false};
  std::thread thread_;
};

}  // namespace sockecho
