// sockecho: acting on SIGINT and SIGTERM (stopping a server, say) without a signal handler.
#pragma once

#include <atomic>
#include <csignal>
#include <functional>
#include <initializer_list>
#include <thread>

namespace sockecho {

// Blocks the given signals and waits for them on a thread of its own (sigwait), so a signal can
// never race a blocking accept() or interrupt a system call. The first signal calls
// on_first_signal, on that thread: typically [&server] { server.stop(); }. It is called at most
// once, must not throw (an exception there ends the process) and should return soon. A second
// signal is given back its default action (it ends the process), the way a second Ctrl-C is
// expected to. Construct it before starting any thread that does not block these signals itself:
// threads inherit the signal mask of the thread that creates them. Throws std::invalid_argument
// for an empty callback or no signals, std::system_error if the thread cannot start.
class StopOnSignals {
 public:
  explicit StopOnSignals(std::function<void()> on_first_signal,
                         std::initializer_list<int> signals = {SIGINT, SIGTERM});
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  StopOnSignals(StopOnSignals&&) = delete;
  StopOnSignals& operator=(StopOnSignals&&) = delete;
  // Ends the waiting thread. The signals stay blocked.
  ~StopOnSignals();

 private:
  void wait() noexcept;

  std::function<void()> on_first_signal_;
  sigset_t signals_{};
  int wake_signal_ = 0;
  std::atomic<bool> leaving_{false};
  std::thread thread_;
};

}  // namespace sockecho
