// sockecho (private): a Server's waiting room, where connections whose request is not complete
// wait without a worker (see docs/ARCHITECTURE.md, "The waiting room").
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sockecho/buffer.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/record.hpp"

namespace sockecho::detail {

// Bytes charged to a MemoryBudget, refunded when the charge ends.
class Charge {
 public:
  explicit Charge(MemoryBudget& budget) noexcept : budget_(&budget) {}
  Charge(Charge&& other) noexcept
      : budget_(other.budget_), bytes_(std::exchange(other.bytes_, 0)) {}
  Charge& operator=(Charge&&) = delete;
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() {
    if (bytes_ > 0) budget_->refund(bytes_);
  }

  // Charges `bytes` more: false, and nothing charged, when the budget has no room for them.
  [[nodiscard]] bool add(std::size_t bytes) noexcept {
    if (!budget_->try_charge(bytes)) return false;
    bytes_ += bytes;
    return true;
  }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  // Takes over `other`'s bytes (a charge to the same budget), leaving it empty.
  void absorb(Charge&& other) noexcept { bytes_ += std::exchange(other.bytes_, 0); }
  // Gives every byte back now.
  void clear() noexcept { budget_->refund(std::exchange(bytes_, 0)); }
  // Gives `bytes` of those charged back now (no more than it holds).
  void give_back(std::size_t bytes) noexcept {
    bytes = std::min(bytes, bytes_);
    bytes_ -= bytes;
    budget_->refund(bytes);
  }

 private:
  MemoryBudget* budget_;
  std::size_t bytes_ = 0;
};

// A connection whose request is not complete, or complete and not yet taken by a worker: owned
// by the room, then by the handoff queue, then by the worker that answers it. Its request buffer
// is charged, by its capacity, until it is destroyed.
struct Waiting {
  Waiting(Connection&& connection_, Buffer&& request_, Charge&& charge_, Clock::time_point start_,
          bool admitted_) noexcept
      : connection(std::move(connection_)),
        request(std::move(request_)),
        charge(std::move(charge_)),
        start(start_),
        admitted(admitted_) {}

  Connection connection;
  Buffer request;
  Charge charge;
  Clock::time_point start;  // the accept
  bool admitted;            // counted against its source's limit
  bool at_end = false;      // the client half-closed after the bytes in `request`
  // A reply the client has not read yet: `request` holds its unsent bytes, from `written` on,
  // and `record` how its connection ends once they are all taken.
  bool replying = false;
  std::size_t written = 0;
  std::unique_ptr<ConnectionRecord> record;  // with `replying`: kept small while a request waits
  // With `replying`, a line session that goes on once its reply is taken: it then waits for its
  // next line, of which `next` holds the bytes read already.
  bool goes_on = false;
  Buffer next;
};

// Holds connections whose request is incomplete on one thread of its own (an epoll set), reads
// what arrives, ends those past a limit, and queues the complete ones for the server's crew to
// take().
class WaitingRoom {
 public:
  // How often the limits of every held connection are checked: a limit is enforced within its
  // value + kTick.
  static constexpr std::chrono::milliseconds kTick{250};
  // The smallest buffer a held request gets; each growth doubles it.
  static constexpr std::size_t kFirstBuffer = 64;
  // Buffers this large are kept as spares when their connection ends, up to kMaxSpares of them.
  static constexpr std::size_t kSpareMin = std::size_t{1} << 20;
  static constexpr std::size_t kMaxSpares = 4;

  // Ends a held connection the room gave up on (a limit, the budget, the peer), unanswered:
  // called on the room's thread, without its lock.
  using End = std::function<void(Waiting& waiting, Outcome outcome, const std::string& detail)>;

  // Says a request was queued while no taker waited for one (to start one): called on the
  // room's thread, without its lock.
  using Queued = std::function<void()>;

  // Large buffers are kept as spares while one has been used within `keep_spares` (0: none
  // kept). Throws std::system_error when the epoll set or the eventfd cannot be made.
  WaitingRoom(Framing framing, std::chrono::milliseconds keep_spares, End end, Queued queued);
  WaitingRoom(const WaitingRoom&) = delete;
  WaitingRoom& operator=(const WaitingRoom&) = delete;
  WaitingRoom(WaitingRoom&&) = delete;
  WaitingRoom& operator=(WaitingRoom&&) = delete;
  // stop()
  ~WaitingRoom();

  // Takes `connection` (accepted at `start`), whose first `bytes` were read already and whose
  // request is not complete: false, the connection left with the caller, when the budget has
  // no room for its bytes. Throws std::system_error (the connection then left with the caller)
  // when it cannot be watched, or the room's thread cannot start.
  [[nodiscard]] bool park(Connection& connection, std::string_view bytes, Clock::time_point start,
                          bool admitted);

  // Takes `connection`, whose reply's `unsent` bytes the client has not read yet, to write them
  // as it reads. Once all are written the connection ends with `record` (answered); or, given
  // `next` (a line session that goes on), it waits for its next line, of which `next` holds the
  // bytes read already, as a connection park() took would. False, the connection and the bytes
  // left with the caller, when the budget has no room for them. Throws std::system_error as
  // park() does.
  [[nodiscard]] bool park_reply(Connection& connection, Buffer& unsent, ConnectionRecord record,
                                Clock::time_point start, bool admitted,
                                std::optional<std::string_view> next = std::nullopt);

  // Waits up to `idle` for a complete request, first come first served: nullptr when none came.
  // Once draining: waits until one comes or the room holds nothing (then nullptr at once).
  [[nodiscard]] std::unique_ptr<Waiting> take(std::chrono::milliseconds idle);
  // The server is stopping and no new connection comes: take() waits for the room to empty.
  void drain() noexcept;
  [[nodiscard]] bool draining() const noexcept { return draining_.load(); }

  // Connections held (waiting, or queued for a worker).
  [[nodiscard]] std::size_t count() const noexcept { return count_.load(); }
  [[nodiscard]] std::size_t queued() const noexcept { return queued_.load(); }

  // Takes back the buffer of a connection that has ended, on any thread: a large one is kept,
  // with its charge, for the next large request, which would otherwise fault fresh pages in one
  // by one. Spares are freed once none has been used for `keep_spares`, and when any charge to
  // the budget (a request's, a job's) finds it spent.
  void recycle(Waiting& waiting) noexcept;

  // The server is stopping: line sessions waiting between lines end (outcome ok, closed
  // cleanly), now and whenever one is parked from now on; a request begun goes on to its end.
  void close_idle() noexcept;

  // Ends the room's thread, then every connection it still holds (outcome error). Call it once
  // no worker can park again.
  void stop() noexcept;

 private:
  struct Ended {
    std::unique_ptr<Waiting> waiting;
    Outcome outcome;
    std::string detail;
  };
  using Held = std::unordered_map<int, std::unique_ptr<Waiting>>;

  void run() noexcept;
  // With mutex_ held:
  void readable(int fd, std::vector<Ended>& ended);
  void writable(Held::iterator found, std::vector<Ended>& ended);
  // A line session's reply is all the kernel's: it waits for its next line (with mutex_ held).
  void await_next_line(Held::iterator found, std::vector<Ended>& ended);
  // Its request complete: out of the epoll set, onto the queue (with mutex_ held).
  void queue_complete(Held::iterator found, std::vector<Ended>& ended);
  // Puts a connection in the room, watched for `events`; with mutex_ held. Throws
  // std::system_error (`waiting` then left as it was) when it cannot be watched.
  void hold(std::unique_ptr<Waiting>& waiting, std::uint32_t events);
  void sweep(Clock::time_point now, std::vector<Ended>& ended);
  void end_idle(std::vector<Ended>& ended);
  bool grow(Waiting& waiting) noexcept;
  // With or without mutex_ (spares_mutex_ is taken inside, never the other way round): gives
  // `waiting` a spare of `want` bytes or more in place of its buffer (false: none); frees every
  // spare.
  bool reuse_spare(Waiting& waiting, std::size_t want) noexcept;
  void free_spares() noexcept;
  // Without it:
  void end(std::vector<Ended>& ended) noexcept;

  Framing framing_;
  std::size_t limit_;  // max_bytes + 1 (one byte past it is how "too large" is known); 0: none
  End end_;
  Queued queued_callback_;
  std::size_t takers_ = 0;    // threads in take(), under mutex_
  bool call_queued_ = false;  // under mutex_: queued_callback_ is due
  Fd epoll_;
  Fd wake_;  // stop() wakes the thread

  std::mutex mutex_;
  std::condition_variable changed_;  // a request queued, or the room emptied
  Held held_;
  std::deque<std::unique_ptr<Waiting>> queue_;
  std::atomic<std::size_t> count_{0};   // held_ + queue_, written under mutex_
  std::atomic<std::size_t> queued_{0};  // queue_.size()
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closing_idle_{false};
  std::atomic<bool> draining_{false};
  std::thread thread_;  // started by the first park()

  struct Spare {
    Buffer buffer;
    Charge charge;
  };
  std::chrono::milliseconds keep_spares_;
  std::mutex spares_mutex_;
  std::vector<std::unique_ptr<Spare>> spares_;
  Clock::time_point spare_used_;  // the last recycle() or reuse, under spares_mutex_
  // Last: it ends first, before the spares it frees. A charge to the budget (a request's, a
  // job's) that finds it spent frees them.
  MemoryBudget::Reclaimer reclaimer_;
};

}  // namespace sockecho::detail
