#include "sockecho/signals.hpp"

#include <pthread.h>

#include <stdexcept>
#include <system_error>
#include <utility>

#include "sockecho/error.hpp"

namespace sockecho {

StopOnSignals::StopOnSignals(std::function<void()> on_first_signal,
                             std::initializer_list<int> signals)
    : on_first_signal_(std::move(on_first_signal)) {
  if (!on_first_signal_) throw std::invalid_argument("no action to take on a signal");
  ::sigemptyset(&signals_);
  for (const int signal : signals) {
    ::sigaddset(&signals_, signal);
    if (wake_signal_ == 0) wake_signal_ = signal;
  }
  if (wake_signal_ == 0) throw std::invalid_argument("no signals to stop on");
  const int err = ::pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  if (err != 0) throw os_error(err, "pthread_sigmask");
  thread_ = std::thread([this] { wait(); });
}

StopOnSignals::~StopOnSignals() {
  leaving_ = true;
  // The signal is blocked everywhere, so this only wakes the waiting thread's sigwait().
  ::pthread_kill(thread_.native_handle(), wake_signal_);
  thread_.join();
}

void StopOnSignals::wait() noexcept {
  bool stopped = false;
  for (;;) {
    int signal = 0;
    if (::sigwait(&signals_, &signal) != 0) continue;
    if (leaving_) return;
    if (!stopped) {
      stopped = true;
      on_first_signal_();
      continue;
    }
    // A second signal: the user insists. Let it act with its default action on this thread.
    (void)::signal(signal, SIG_DFL);
    sigset_t one;
    ::sigemptyset(&one);
    ::sigaddset(&one, signal);
    ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    (void)::raise(signal);
  }
}

}  // namespace sockecho
