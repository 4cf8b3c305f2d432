// sockecho (private): the signal mask a library thread starts with.
#pragma once

#include <pthread.h>

#include <csignal>

#include "sockecho/error.hpp"

namespace sockecho::detail {

// Blocks signals in the calling thread for as long as it lives, then restores the mask it found.
// A thread starts with its creator's mask, so a library thread started under it (the job
// threads, the log writer, the signal waiter) has no moment in which it could take a signal that
// belongs to the program (or to StopOnSignals' sigwait).
class BlockedSignals {
 public:
  // Every signal.
  BlockedSignals() : BlockedSignals(all()) {}
  // The signals of `signals`. Throws std::system_error if the mask cannot be changed.
  explicit BlockedSignals(const sigset_t& signals) {
    const int err = ::pthread_sigmask(SIG_BLOCK, &signals, &before_);
    if (err != 0) throw os_error(err, "pthread_sigmask");
  }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;
  BlockedSignals(BlockedSignals&&) = delete;
  BlockedSignals& operator=(BlockedSignals&&) = delete;
  ~BlockedSignals() {
    if (restore_) (void)::pthread_sigmask(SIG_SETMASK, &before_, nullptr);
  }

  // Leaves the signals blocked for good: for a set that must stay blocked in this thread and
  // every one it starts later, as sigwait() needs.
  void keep() noexcept { restore_ = false; }

 private:
  static sigset_t all() noexcept {
    sigset_t signals;
    sigfillset(&signals);
    return signals;
  }

  sigset_t before_{};
  bool restore_ = true;
};

}  // namespace sockecho::detail
