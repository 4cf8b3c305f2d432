// sockecho: acting on signals (stopping a server, writing its counters) without a signal handler.
#pragma once

#include <atomic>
#include <csignal>
#include <functional>
#include <initializer_list>
#include <thread>
#include <utility>
#include <vector>

#include "sockecho/export.hpp"

namespace sockecho {

// What a SignalWaiter does each time one signal arrives.
struct SOCKECHO_EXPORT OnSignal {
  enum class Action {
    stop,    // the first stop signal of a waiter calls its callback; a later one ends the process
    call,    // the callback, every time
    ignore,  // nothing: the signal is taken and dropped
  };

  // The first signal of any stop() in one SignalWaiter calls that signal's callback (typically
  // [&server] { server.stop(); }); any stop signal after it is given back its default action,
  // which ends the process, the way a second Ctrl-C is expected to.
  [[nodiscard]] static OnSignal stop(int signal, std::function<void()> callback) {
    return {signal, Action::stop, std::move(callback), {}};
  }
  // The same, and `again` is called on the later stop signal just before its default action
  // (to kill what the process started, say).
  [[nodiscard]] static OnSignal stop(int signal, std::function<void()> callback,
                                     std::function<void()> again) {
    return {signal, Action::stop, std::move(callback), std::move(again)};
  }
  // Calls callback each time the signal arrives (SIGUSR1: write the counters, say).
  [[nodiscard]] static OnSignal call(int signal, std::function<void()> callback) {
    return {signal, Action::call, std::move(callback), {}};
  }
  // Takes the signal and does nothing, so its default action (often: end the process) never runs.
  [[nodiscard]] static OnSignal ignore(int signal) { return {signal, Action::ignore, {}, {}}; }

  int signal = 0;
  Action action = Action::ignore;
  std::function<void()> callback;
  std::function<void()> again;  // stop only: before a later stop signal ends the process
};

// Blocks the given signals in the calling thread and waits for them on a thread of its own
// (sigwait), acting on each as its OnSignal says, one at a time and in the order they arrive.
// No signal handler is installed, so a signal can never race a blocking accept() or interrupt a
// system call, and the dispositions stay as they were (a program started later resets the mask
// it inherits). Callbacks run on the waiting thread; they must not throw (an exception there ends
// the process) and should return soon: signals that arrive meanwhile wait, and several of one
// kind may be merged into one by the kernel. Construct it before starting any thread that does
// not block these signals itself: threads inherit the signal mask of the thread that creates
// them. Throws std::invalid_argument for no signals, a signal given twice or one that cannot be
// blocked (SIGKILL, SIGSTOP, a bad number), or stop/call without a callback; std::system_error if
// the thread cannot start.
class SOCKECHO_EXPORT SignalWaiter {
 public:
  explicit SignalWaiter(std::vector<OnSignal> actions);
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;
  SignalWaiter(SignalWaiter&&) = delete;
  SignalWaiter& operator=(SignalWaiter&&) = delete;
  // Ends the waiting thread. The signals stay blocked: one arriving later stays pending.
  ~SignalWaiter();

 private:
  void wait() noexcept;
  void act(int signal) noexcept;

  std::vector<OnSignal> actions_;
  sigset_t signals_{};
  bool stopped_ = false;  // only the waiting thread reads or writes it
  std::atomic<bool> leaving_{false};
  std::thread thread_;
};

// The common case of SignalWaiter: the first of the given signals calls on_first_signal, on the
// waiting thread; a second one ends the process with its default action. It is called at most
// once. The same rules apply (construct it before other threads start; the callback must not
// throw). Throws std::invalid_argument for an empty callback or no signals, std::system_error
// if the thread cannot start.
class SOCKECHO_EXPORT StopOnSignals {
 public:
  explicit StopOnSignals(std::function<void()> on_first_signal,
                         std::initializer_list<int> signals = {SIGINT, SIGTERM});

 private:
  SignalWaiter waiter_;
};

}  // namespace sockecho
