// sockecho: one budget of memory that several holders charge: the request buffers of a
// protocol's connections and the inputs of a job queue's jobs, so that what the daemon holds for
// its clients has one bound, not one per holder.
#pragma once

#include <atomic>
#include <cstddef>

#include "sockecho/export.hpp"

namespace sockecho {

// A count of bytes charged against a limit. Lock-free; shared (std::shared_ptr) by whoever holds
// memory under it, each of whom refunds exactly what it charged once the memory is freed.
class SOCKECHO_EXPORT MemoryBudget {
 public:
  // `limit` 0: no limit (charges are still counted).
  explicit MemoryBudget(std::size_t limit) noexcept : limit_(limit) {}

  // Charges `bytes` if the total stays within the limit: false, and nothing charged, if not.
  [[nodiscard]] bool try_charge(std::size_t bytes) noexcept {
    if (bytes == 0) return true;
    std::size_t now = charged_.load();
    do {
      if (limit_ != 0 && (now > limit_ || bytes > limit_ - now)) return false;
    } while (!charged_.compare_exchange_weak(now, now + bytes));
    return true;
  }
  // Gives back bytes charged before.
  void refund(std::size_t bytes) noexcept { charged_.fetch_sub(bytes); }

  [[nodiscard]] std::size_t charged() const noexcept { return charged_.load(); }
  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }

 private:
  const std::size_t limit_;
  std::atomic<std::size_t> charged_{0};
};

}  // namespace sockecho
