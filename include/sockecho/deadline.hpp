// sockecho: the time limits of one connection, and the one way sockecho waits for a descriptor.
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstddef>

#include "sockecho/export.hpp"

namespace sockecho {

using Clock = std::chrono::steady_clock;

// The two limits a connection's reads and writes honour, kept in one place (as Go's
// SetDeadline): an idle limit that every byte of progress starts over, and an absolute end
// (the whole-request deadline) that nothing extends. Either may be absent. progress() may be
// called from a reading and a writing thread at once; the limits are set by the owner.
class SOCKECHO_EXPORT Deadline {
 public:
  // No limits; the idle clock starts now.
  Deadline() noexcept : last_progress_(Clock::now().time_since_epoch().count()) {}
  // An idle limit (zero: none) whose clock starts now.
  explicit Deadline(std::chrono::milliseconds idle, Clock::time_point start = Clock::now()) noexcept
      : idle_(idle.count() > 0 ? idle : std::chrono::milliseconds(0)),
        last_progress_(start.time_since_epoch().count()) {}
  Deadline(const Deadline& other) noexcept
      : idle_(other.idle_), last_progress_(other.last_progress_.load()), end_(other.end_) {}
  Deadline& operator=(const Deadline& other) noexcept {
    if (this == &other) return *this;
    idle_ = other.idle_;
    last_progress_.store(other.last_progress_.load());
    end_ = other.end_;
    return *this;
  }
  ~Deadline() = default;

  // Replaces the idle limit (zero: none) and starts its clock over.
  void set_idle(std::chrono::milliseconds idle, Clock::time_point now = Clock::now()) noexcept;
  [[nodiscard]] std::chrono::milliseconds idle() const noexcept { return idle_; }
  // Sets the absolute end; Clock::time_point::max() removes it.
  void set_end(Clock::time_point end) noexcept { end_ = end; }
  [[nodiscard]] Clock::time_point end() const noexcept { return end_; }

  // Records progress at `now`: the idle limit starts over.
  void progress(Clock::time_point now) noexcept {
    last_progress_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
  [[nodiscard]] Clock::time_point last_progress() const noexcept {
    return Clock::time_point(Clock::duration(last_progress_.load(std::memory_order_relaxed)));
  }

  // When the nearer limit runs out; Clock::time_point::max() when there is none.
  [[nodiscard]] Clock::time_point expiry() const noexcept;
  // True when the absolute end, not the idle limit, is what runs out first.
  [[nodiscard]] bool end_first() const noexcept;

 private:
  std::chrono::milliseconds idle_{0};
  std::atomic<Clock::rep> last_progress_;
  Clock::time_point end_ = Clock::time_point::max();
};

// When a limit of `limit` that starts at `start` runs out; Clock::time_point::max() for a zero
// (or negative) limit, which sockecho's options read as "no limit".
[[nodiscard]] SOCKECHO_EXPORT Clock::time_point end_after(
    std::chrono::milliseconds limit, Clock::time_point start = Clock::now()) noexcept;

// poll() until something is ready or `until` passes (Clock::time_point::max(): no limit), with
// EINTR retried on the time that is left: sockecho's one way of waiting for descriptors. Returns
// poll's result (0 when the time ran out) or -1 with errno set.
SOCKECHO_EXPORT int poll_until(pollfd* fds, std::size_t count, Clock::time_point until) noexcept;

}  // namespace sockecho
