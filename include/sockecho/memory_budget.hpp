// sockecho: one budget of memory that several holders charge: the request buffers of a
// protocol's connections and the inputs of a job queue's jobs, so that what the daemon holds for
// its clients has one bound, not one per holder.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "sockecho/export.hpp"

namespace sockecho {

// A count of bytes charged against a limit. Charging is lock-free while there is room; shared
// (std::shared_ptr) by whoever holds memory under it, each of whom refunds exactly what it
// charged once the memory is freed.
//
// Memory kept only to be reused (spare buffers) may hold a charge too; its holder registers a
// reclaimer, and a charge that finds the budget spent asks every reclaimer to let go before it
// gives up. So memory a holder merely keeps never refuses a job or a request.
class SOCKECHO_EXPORT MemoryBudget {
 public:
  // A reclaimer's registration (add_reclaimer()): it ends when this is destroyed, and once the
  // destructor has returned the reclaimer is not running and is never called again.
  class SOCKECHO_EXPORT Reclaimer {
   public:
    Reclaimer() noexcept = default;
    Reclaimer(Reclaimer&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)), id_(other.id_) {}
    Reclaimer& operator=(Reclaimer&& other) noexcept;
    Reclaimer(const Reclaimer&) = delete;
    Reclaimer& operator=(const Reclaimer&) = delete;
    ~Reclaimer();

   private:
    friend class MemoryBudget;
    Reclaimer(MemoryBudget* budget, std::uint64_t id) noexcept : budget_(budget), id_(id) {}
    MemoryBudget* budget_ = nullptr;
    std::uint64_t id_ = 0;
  };

  // `limit` 0: no limit (charges are still counted).
  explicit MemoryBudget(std::size_t limit) noexcept : limit_(limit) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;
  MemoryBudget(MemoryBudget&&) = delete;
  MemoryBudget& operator=(MemoryBudget&&) = delete;
  ~MemoryBudget() = default;

  // Charges `bytes` if the total stays within the limit: false, and nothing charged, if not even
  // after every reclaimer has let go of what it keeps.
  [[nodiscard]] bool try_charge(std::size_t bytes) noexcept {
    return charge_within_limit(bytes) || reclaim_and_charge(bytes);
  }
  // Gives back bytes charged before.
  void refund(std::size_t bytes) noexcept { charged_.fetch_sub(bytes); }

  // Registers `let_go`, which gives back (refunds) memory its holder keeps only to reuse it. It
  // is called when a charge finds the budget spent, on the charging thread, never two at once,
  // so it must not charge this budget itself; what it throws is ignored. The registration lasts
  // as long as the returned value, which must not outlive the budget. Throws std::bad_alloc.
  [[nodiscard]] Reclaimer add_reclaimer(std::function<void()> let_go);

  [[nodiscard]] std::size_t charged() const noexcept { return charged_.load(); }
  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }

 private:
  bool charge_within_limit(std::size_t bytes) noexcept {
    if (bytes == 0) return true;
    std::size_t now = charged_.load();
    do {
      if (limit_ != 0 && (now > limit_ || bytes > limit_ - now)) return false;
    } while (!charged_.compare_exchange_weak(now, now + bytes));
    return true;
  }
  // The budget is spent: every reclaimer lets go, and the charge is tried once more.
  bool reclaim_and_charge(std::size_t bytes) noexcept;
  void remove_reclaimer(std::uint64_t id) noexcept;

  const std::size_t limit_;
  std::atomic<std::size_t> charged_{0};
  std::atomic<std::size_t> reclaimer_count_{0};  // reclaimers_.size(), readable without the lock
  std::mutex reclaim_mutex_;  // held while reclaimers run, so a removal waits for them
  std::vector<std::pair<std::uint64_t, std::function<void()>>> reclaimers_;
  std::uint64_t next_id_ = 1;  // under reclaim_mutex_
};

}  // namespace sockecho
