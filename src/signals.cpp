#include "sockecho/signals.hpp"

#include <pthread.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "signal_mask.hpp"

namespace sockecho {

namespace {

// The same callback for each signal; SignalWaiter calls at most one of them, once.
std::vector<OnSignal> stop_on(std::function<void()> callback, std::initializer_list<int> signals) {
  if (!callback) throw std::invalid_argument("no action to take on a signal");
  if (signals.size() == 0) throw std::invalid_argument("no signals to stop on");
  const auto shared = std::make_shared<std::function<void()>>(std::move(callback));
  std::vector<OnSignal> actions;
  actions.reserve(signals.size());
  for (const int signal : signals) {
    actions.push_back(OnSignal::stop(signal, [shared] { (*shared)(); }));
  }
  return actions;
}

}  // namespace

SignalWaiter::SignalWaiter(std::vector<OnSignal> actions) : actions_(std::move(actions)) {
  if (actions_.empty()) throw std::invalid_argument("no signals to wait for");
  ::sigemptyset(&signals_);
  for (const OnSignal& on : actions_) {
    const std::string name = "signal " + std::to_string(on.signal);
    // SIGKILL and SIGSTOP cannot be blocked: pthread_sigmask() would drop them without a word.
    if (on.signal == SIGKILL || on.signal == SIGSTOP || ::sigismember(&signals_, on.signal) != 0 ||
        ::sigaddset(&signals_, on.signal) != 0) {
      throw std::invalid_argument(name + " cannot be waited for (given twice, or not blockable)");
    }
    if (on.action != OnSignal::Action::ignore && !on.callback) {
      throw std::invalid_argument(name + " has no action to take");
    }
  }
  // Blocked here for good, and so in every thread started from now on, sigwait() takes them;
  // unblocked again only if the waiter cannot start.
  detail::BlockedSignals blocked(signals_);
  thread_ = std::thread([this] { wait(); });
  blocked.keep();
}

SignalWaiter::~SignalWaiter() {
  leaving_ = true;
  // The signal is blocked everywhere, so this only wakes the waiting thread's sigwait().
  ::pthread_kill(thread_.native_handle(), actions_.front().signal);
  thread_.join();
}

void SignalWaiter::wait() noexcept {
  for (;;) {
    int signal = 0;
    if (::sigwait(&signals_, &signal) != 0) continue;
    if (leaving_) return;
    act(signal);
  }
}

void SignalWaiter::act(int signal) noexcept {
  const auto on = std::find_if(actions_.begin(), actions_.end(),
                               [signal](const OnSignal& a) { return a.signal == signal; });
  if (on == actions_.end()) return;
  switch (on->action) {
    case OnSignal::Action::ignore:
      return;
    case OnSignal::Action::call:
      on->callback();
      return;
    case OnSignal::Action::stop:
      break;
  }
  if (!stopped_) {
    stopped_ = true;
    on->callback();
    return;
  }
  // A second stop signal: the user insists. Let it act with its default action on this thread.
  if (on->again) on->again();
  (void)::signal(signal, SIG_DFL);
  sigset_t one;
  ::sigemptyset(&one);
  ::sigaddset(&one, signal);
  ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  (void)::raise(signal);
}

StopOnSignals::StopOnSignals(std::function<void()> on_first_signal,
                             std::initializer_list<int> signals)
    : waiter_(stop_on(std::move(on_first_signal), signals)) {}

}  // namespace sockecho
