#include "waiting_room.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>

#include "classify.hpp"
#include "signal_mask.hpp"
#include "sockecho/error.hpp"

namespace sockecho::detail {

namespace {

// Events taken from the epoll set at once.
constexpr std::size_t kEvents = 64;

Fd make_eventfd(unsigned flags, const char* what) {
  Fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | static_cast<int>(flags)));
  if (!fd) throw os_error(errno, std::string("eventfd (") + what + ")");
  return fd;
}

// A write of 1 to an eventfd cannot block or fail here: the counter would need 2^64 of them.
void post(const Fd& fd) noexcept {
  const std::uint64_t one = 1;
  (void)retry_eintr([&] { return ::write(fd.get(), &one, sizeof one); });
}

// The capacity that holds `size` bytes: a power of two, at least kFirstBuffer.
std::size_t capacity_for(std::size_t size) noexcept {
  std::size_t capacity = WaitingRoom::kFirstBuffer;
  while (capacity < size) capacity *= 2;
  return capacity;
}

// A copy of `bytes` (none: an empty buffer) in a buffer of capacity_for() their size, charged
// to `charge` first: false, nothing copied, when the budget has no room for it.
bool charged_copy(Charge& charge, std::string_view bytes, Buffer& copy) {
  if (bytes.empty()) return true;
  const std::size_t capacity = capacity_for(bytes.size());
  if (!charge.add(capacity)) return false;
  copy.reserve(capacity);
  copy.append(bytes);
  return true;
}

}  // namespace

WaitingRoom::WaitingRoom(Framing framing, std::chrono::milliseconds keep_spares, End end,
                         Queued queued)
    : framing_(std::move(framing)),
      limit_(framing_.max_bytes == 0 ? 0 : framing_.max_bytes + 1),
      end_(std::move(end)),
      queued_callback_(std::move(queued)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(make_eventfd(0, "the waiting room's stop")),
      keep_spares_(keep_spares) {
  if (!epoll_) throw os_error(errno, "epoll_create1 (the waiting room)");
  if (!framing_.budget) framing_.budget = std::make_shared<MemoryBudget>(0);
  reclaimer_ = framing_.budget->add_reclaimer([this] { free_spares(); });
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &event) != 0) {
    throw os_error(errno, "epoll_ctl ADD (the waiting room's stop)");
  }
}

WaitingRoom::~WaitingRoom() { stop(); }

bool WaitingRoom::park(Connection& connection, std::string_view bytes, Clock::time_point start,
                       bool admitted) {
  Charge charge(*framing_.budget);
  Buffer request;
  if (!charged_copy(charge, bytes, request)) return false;
  auto waiting = std::make_unique<Waiting>(std::move(connection), std::move(request),
                                           std::move(charge), start, admitted);
  const std::lock_guard<std::mutex> lock(mutex_);
  try {
    hold(waiting, EPOLLIN);
  } catch (...) {
    connection = std::move(waiting->connection);
    throw;
  }
  return true;
}

bool WaitingRoom::park_reply(Connection& connection, Buffer& unsent, ConnectionRecord record,
                             Clock::time_point start, bool admitted,
                             std::optional<std::string_view> next) {
  Charge charge(*framing_.budget);
  if (!charge.add(unsent.capacity())) return false;
  Buffer begun;
  if (next && !charged_copy(charge, *next, begun)) return false;
  auto kept = std::make_unique<ConnectionRecord>(std::move(record));
  auto waiting = std::make_unique<Waiting>(std::move(connection), std::move(unsent),
                                           std::move(charge), start, admitted);
  waiting->replying = true;
  waiting->record = std::move(kept);
  waiting->goes_on = next.has_value();
  waiting->next = std::move(begun);
  const std::lock_guard<std::mutex> lock(mutex_);
  try {
    hold(waiting, EPOLLOUT);
  } catch (...) {
    connection = std::move(waiting->connection);
    unsent = std::move(waiting->request);
    throw;
  }
  return true;
}

void WaitingRoom::hold(std::unique_ptr<Waiting>& waiting, std::uint32_t events) {
  if (!thread_.joinable()) {
    // The room's thread takes no signal of the program's.
    const BlockedSignals blocked;
    thread_ = std::thread([this] { run(); });
  }
  const int fd = waiting->connection.fd();
  epoll_event event{};
  event.events = events;
  event.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    throw os_error(
        errno, "epoll_ctl ADD " + waiting->connection.peer().to_string() + " (the waiting room)");
  }
  try {
    held_.emplace(fd, std::move(waiting));
  } catch (...) {
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    throw;
  }
  count_.fetch_add(1);
}

std::unique_ptr<Waiting> WaitingRoom::take(std::chrono::milliseconds idle) {
  std::unique_lock<std::mutex> lock(mutex_);
  ++takers_;
  const auto ready = [&] { return !queue_.empty() || (draining_.load() && count_.load() == 0); };
  // Draining, the wait is bounded by the limits of what the room holds.
  while (!ready()) {
    if (draining_.load()) {
      changed_.wait(lock);
    } else if (changed_.wait_for(lock, idle) == std::cv_status::timeout) {
      break;
    }
  }
  --takers_;
  if (queue_.empty()) return nullptr;
  std::unique_ptr<Waiting> waiting = std::move(queue_.front());
  queue_.pop_front();
  queued_.fetch_sub(1);
  if (count_.fetch_sub(1) == 1) changed_.notify_all();
  return waiting;
}

void WaitingRoom::drain() noexcept {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    draining_.store(true);
  }
  changed_.notify_all();
}

void WaitingRoom::stop() noexcept {
  if (stopping_.exchange(true)) return;
  post(wake_);
  if (thread_.joinable()) thread_.join();
  std::vector<Ended> ended;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    try {
      for (auto& [fd, waiting] : held_) {
        ended.push_back({std::move(waiting), Outcome::error, "the server stopped"});
      }
      for (std::unique_ptr<Waiting>& waiting : queue_) {
        ended.push_back({std::move(waiting), Outcome::error, "the server stopped"});
      }
    } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the list; closed unlogged below
    }
    held_.clear();
    queue_.clear();
    queued_.store(0);
  }
  end(ended);
  const std::lock_guard<std::mutex> lock(mutex_);
  count_.store(0);
  changed_.notify_all();
}

void WaitingRoom::close_idle() noexcept {
  if (framing_.unit != Framing::Unit::line || closing_idle_.exchange(true)) return;
  post(wake_);
}

void WaitingRoom::end_idle(std::vector<Ended>& ended) {
  for (auto it = held_.begin(); it != held_.end();) {
    // A line that has arrived but is not read yet is a line begun: answered before the end
    // (and a close with unread bytes would be a reset, not a clean end).
    pollfd arrived{it->first, POLLIN, 0};
    const bool unread = retry_eintr([&] { return ::poll(&arrived, 1, 0); }) > 0;
    if (unread || !it->second->request.empty() || it->second->replying) {
      ++it;
      continue;
    }
    ended.push_back({std::move(it->second), Outcome::ok, "the server stopped between lines"});
    it = held_.erase(it);
  }
}

void WaitingRoom::run() noexcept {
  std::array<epoll_event, kEvents> events{};
  Clock::time_point next_sweep = Clock::now() + kTick;
  std::vector<Ended> ended;
  while (!stopping_.load()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep - Clock::now()).count();
    // Rounded up, so the wait never ends a little early and spins on a zero timeout.
    const int timeout = left < 0 ? 0 : static_cast<int>(left + 1);
    const int n =
        ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0 && errno != EINTR) {
      // Nothing the room can do without its wait: end what it holds and take no more.
      const std::error_code code(errno, std::generic_category());
      const std::lock_guard<std::mutex> lock(mutex_);
      try {
        for (auto& [fd, waiting] : held_) {
          ended.push_back({std::move(waiting), Outcome::error,
                           "epoll_wait (the waiting room): " + code.message()});
        }
      } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the list; closed unlogged
      }
      held_.clear();
      break;
    }
    bool call_queued = false;
    try {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<std::size_t>(i)].data.fd;
        if (fd != wake_.get()) {
          readable(fd, ended);
          continue;
        }
        // Taken, so it wakes the wait once (close_idle(), stop()), not every time after.
        std::uint64_t posted = 0;
        (void)retry_eintr([&] { return ::read(wake_.get(), &posted, sizeof posted); });
      }
      if (closing_idle_.load()) end_idle(ended);
      const Clock::time_point now = Clock::now();
      if (now >= next_sweep) {
        sweep(now, ended);
        next_sweep = now + kTick;
      }
      call_queued = std::exchange(call_queued_, false);
    } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for the list of ends: the
                     // next turn tries again
    }
    if (call_queued && queued_callback_) queued_callback_();
    end(ended);
  }
  end(ended);
}

bool WaitingRoom::grow(Waiting& waiting) noexcept {
  Buffer& request = waiting.request;
  std::size_t want = std::max(request.capacity() * 2, kFirstBuffer);
  if (limit_ != 0) want = std::min(want, limit_);
  if (want >= kSpareMin && reuse_spare(waiting, want)) return true;
  if (!waiting.charge.add(want - request.capacity())) return false;
  try {
    request.reserve(want);
  } catch (...) {
    // The charge stays with the connection until it ends, which is at once: too large.
    return false;
  }
  return true;
}

bool WaitingRoom::reuse_spare(Waiting& waiting, std::size_t want) noexcept {
  std::unique_ptr<Spare> spare;
  {
    const std::lock_guard<std::mutex> lock(spares_mutex_);
    // The smallest that is large enough.
    auto best = spares_.end();
    for (auto it = spares_.begin(); it != spares_.end(); ++it) {
      if ((*it)->buffer.capacity() < want) continue;
      if (best == spares_.end() || (*it)->buffer.capacity() < (*best)->buffer.capacity()) best = it;
    }
    if (best == spares_.end()) return false;
    spare = std::move(*best);
    spares_.erase(best);
    spare_used_ = Clock::now();
  }
  // The spare's pages are faulted in already: the bytes so far are copied once, and the old
  // buffer and its charge are given back.
  Buffer& request = waiting.request;
  spare->buffer.clear();
  spare->buffer.append(request.view());
  request = std::move(spare->buffer);
  waiting.charge.clear();
  waiting.charge.absorb(std::move(spare->charge));
  return true;
}

void WaitingRoom::recycle(Waiting& waiting) noexcept {
  if (keep_spares_.count() == 0 || waiting.request.capacity() < kSpareMin) return;
  try {
    auto spare =
        std::make_unique<Spare>(Spare{std::move(waiting.request), std::move(waiting.charge)});
    const std::lock_guard<std::mutex> lock(spares_mutex_);
    if (spares_.size() >= kMaxSpares) return;  // freed here, as the connection's would be
    spares_.push_back(std::move(spare));
    spare_used_ = Clock::now();
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory to keep it: it is freed
  }
}

void WaitingRoom::free_spares() noexcept {
  std::vector<std::unique_ptr<Spare>> freed;
  const std::lock_guard<std::mutex> lock(spares_mutex_);
  freed.swap(spares_);
}

void WaitingRoom::writable(Held::iterator found, std::vector<Ended>& ended) {
  Waiting& waiting = *found->second;
  const std::string_view rest = waiting.request.view().substr(waiting.written);
  try {
    const std::size_t sent = waiting.connection.try_write(&rest, 1);
    if (sent > 0) waiting.connection.deadline().progress(Clock::now());
    waiting.written += sent;
  } catch (const std::system_error& e) {
    ended.push_back({std::move(found->second), classify(e.code()), e.what()});
    held_.erase(found);
    return;
  }
  if (waiting.written < waiting.request.size()) return;
  if (waiting.goes_on) {
    await_next_line(found, ended);
    return;
  }
  // All of it is the kernel's: the connection ends as its reply said.
  ended.push_back({std::move(found->second), waiting.record->outcome, {}});
  held_.erase(found);
}

void WaitingRoom::await_next_line(Held::iterator found, std::vector<Ended>& ended) {
  Waiting& waiting = *found->second;
  waiting.replying = false;
  waiting.goes_on = false;
  waiting.written = 0;
  waiting.record.reset();
  // The reply's buffer and its charge go; what was read of the next line stays, charged.
  const Buffer reply = std::exchange(waiting.request, std::exchange(waiting.next, Buffer()));
  waiting.charge.give_back(reply.capacity());
  const Buffer& request = waiting.request;
  if (!request.empty() && std::memchr(request.data(), '\n', request.size()) != nullptr) {
    // A protocol that answers one line at a time left a whole line behind its reply.
    queue_complete(found, ended);
    return;
  }
  // Between lines (a stop ends it there, in end_idle()), or in a line begun.
  waiting.connection.deadline().set_end(request.empty()
                                            ? Clock::time_point::max()
                                            : end_after(framing_.request_timeout, Clock::now()));
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = found->first;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, found->first, &event) != 0) {
    std::string detail = "epoll_ctl MOD " + waiting.connection.peer().to_string() + ": " +
                         std::error_code(errno, std::generic_category()).message();
    ended.push_back({std::move(found->second), Outcome::error, std::move(detail)});
    held_.erase(found);
  }
}

void WaitingRoom::readable(int fd, std::vector<Ended>& ended) {
  const auto found = held_.find(fd);
  if (found == held_.end()) return;  // ended since the event was reported
  if (found->second->replying) {
    writable(found, ended);
    return;
  }
  Waiting& waiting = *found->second;
  const auto give_up = [&](Outcome outcome, std::string detail) {
    ended.push_back({std::move(found->second), outcome, std::move(detail)});
    held_.erase(found);
  };
  try {
    for (;;) {
      Buffer& request = waiting.request;
      if (limit_ != 0 && request.size() >= limit_) {
        give_up(Outcome::too_large, over_max_bytes(framing_.max_bytes));
        return;
      }
      if (request.room() == 0 && !grow(waiting)) {
        give_up(Outcome::too_large, over_max_total_bytes(framing_.budget->limit()));
        return;
      }
      std::size_t chunk = request.room();
      if (limit_ != 0) chunk = std::min(chunk, limit_ - request.size());
      const std::optional<std::size_t> n = waiting.connection.try_read(request.tail(), chunk);
      if (!n) return;  // all there is for now
      if (*n == 0) {
        waiting.at_end = true;
        break;
      }
      const Clock::time_point now = Clock::now();
      waiting.connection.deadline().progress(now);
      if (framing_.unit == Framing::Unit::line) {
        // A line's request limit runs from its first byte; it is complete at its '\n'.
        if (request.empty()) {
          waiting.connection.deadline().set_end(end_after(framing_.request_timeout, now));
        }
        const bool line_ends = std::memchr(request.tail(), '\n', *n) != nullptr;
        request.commit(*n);
        if (line_ends) break;
      } else {
        request.commit(*n);
      }
    }
  } catch (const std::system_error& e) {
    give_up(classify(e.code()), e.what());
    return;
  }
  queue_complete(found, ended);
}

void WaitingRoom::queue_complete(Held::iterator found, std::vector<Ended>& ended) {
  // Out of the epoll set, onto the queue, one ticket for a worker.
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, found->first, nullptr) != 0) {
    std::string detail = "epoll_ctl DEL " + found->second->connection.peer().to_string() + ": " +
                         std::error_code(errno, std::generic_category()).message();
    ended.push_back({std::move(found->second), Outcome::error, std::move(detail)});
    held_.erase(found);
    return;
  }
  queue_.push_back(std::move(found->second));
  held_.erase(found);
  queued_.fetch_add(1);
  // More queued than takers waiting: the server starts another (after the lock is let go).
  if (queued_.load() > takers_) call_queued_ = true;
  changed_.notify_one();
}

void WaitingRoom::sweep(Clock::time_point now, std::vector<Ended>& ended) {
  {
    std::vector<std::unique_ptr<Spare>> freed;
    const std::lock_guard<std::mutex> lock(spares_mutex_);
    if (!spares_.empty() && now - spare_used_ >= keep_spares_) freed.swap(spares_);
  }
  for (auto it = held_.begin(); it != held_.end();) {
    const Deadline& deadline = it->second->connection.deadline();
    if (now < deadline.expiry()) {
      ++it;
      continue;
    }
    std::string detail = (it->second->replying ? "write " : "read ") +
                         it->second->connection.peer().to_string() + ": Connection timed out" +
                         (deadline.end_first() ? " (request deadline)" : "");
    ended.push_back({std::move(it->second), Outcome::timeout, std::move(detail)});
    it = held_.erase(it);
  }
}

void WaitingRoom::end(std::vector<Ended>& ended) noexcept {
  if (ended.empty()) return;
  const std::size_t n = ended.size();
  for (Ended& one : ended) {
    if (!one.waiting) continue;
    try {
      end_(*one.waiting, one.outcome, one.detail);
    } catch (...) {  // NOLINT(bugprone-empty-catch): the server's end is noexcept in spirit;
                     // the connection still closes below
    }
    recycle(*one.waiting);
    one.waiting.reset();
  }
  ended.clear();
  const std::lock_guard<std::mutex> lock(mutex_);
  if (count_.fetch_sub(n) == n) changed_.notify_all();
}

}  // namespace sockecho::detail
