// MemoryBudget's slow path: reclaimers asked to let go when a charge finds the budget spent.
#include "sockecho/memory_budget.hpp"

#include <algorithm>
#include <functional>
#include <mutex>
#include <utility>

namespace sockecho {

MemoryBudget::Reclaimer& MemoryBudget::Reclaimer::operator=(Reclaimer&& other) noexcept {
  if (this != &other) {
    if (budget_ != nullptr) budget_->remove_reclaimer(id_);
    budget_ = std::exchange(other.budget_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

MemoryBudget::Reclaimer::~Reclaimer() {
  if (budget_ != nullptr) budget_->remove_reclaimer(id_);
}

MemoryBudget::Reclaimer MemoryBudget::add_reclaimer(std::function<void()> let_go) {
  const std::lock_guard<std::mutex> lock(reclaim_mutex_);
  const std::uint64_t id = next_id_++;
  reclaimers_.emplace_back(id, std::move(let_go));
  reclaimer_count_ = reclaimers_.size();
  return {this, id};
}

bool MemoryBudget::reclaim_and_charge(std::size_t bytes) noexcept {
  // Most budgets have nothing kept to reclaim: no lock for them.
  if (reclaimer_count_.load() == 0) return false;
  {
    const std::lock_guard<std::mutex> lock(reclaim_mutex_);
    for (const auto& reclaimer : reclaimers_) {
      try {
        reclaimer.second();
      } catch (...) {  // NOLINT(bugprone-empty-catch): it could not let go; the others may
      }
    }
  }
  return charge_within_limit(bytes);
}

void MemoryBudget::remove_reclaimer(std::uint64_t id) noexcept {
  const std::lock_guard<std::mutex> lock(reclaim_mutex_);
  const auto found = std::find_if(reclaimers_.begin(), reclaimers_.end(),
                                  [id](const auto& reclaimer) { return reclaimer.first == id; });
  if (found != reclaimers_.end()) reclaimers_.erase(found);
  reclaimer_count_ = reclaimers_.size();
}

}  // namespace sockecho
