#include "sockecho/deadline.hpp"

#include <algorithm>
#include <cerrno>

namespace sockecho {

void Deadline::set_idle(std::chrono::milliseconds idle, Clock::time_point now) noexcept {
  idle_ = idle.count() > 0 ? idle : std::chrono::milliseconds(0);
  progress(now);
}

Clock::time_point Deadline::expiry() const noexcept {
  return std::min(end_, end_after(idle_, last_progress()));
}

bool Deadline::end_first() const noexcept {
  return end_ != Clock::time_point::max() && end_ <= expiry();
}

Clock::time_point end_after(std::chrono::milliseconds limit, Clock::time_point start) noexcept {
  return limit.count() > 0 ? start + limit : Clock::time_point::max();
}

int poll_until(pollfd* fds, std::size_t count, Clock::time_point until) noexcept {
  for (;;) {
    int timeout = -1;
    if (until != Clock::time_point::max()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
      // Rounded up, so a wait never ends a little early and then spins on a zero timeout.
      timeout = left < 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 1 << 30));
    }
    const int ready = ::poll(fds, static_cast<nfds_t>(count), timeout);
    if (ready >= 0 || errno != EINTR) return ready;
  }
}

}  // namespace sockecho
