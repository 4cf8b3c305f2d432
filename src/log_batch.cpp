// The batching Logger: lines gathered under a lock and written by a thread of the logger's own.
#include "log_batch.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <memory>
#include <utility>

#include "log_line.hpp"
#include "signal_mask.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"

namespace sockecho {

namespace {

// Decimal digits of v into out (which has room for 20); returns the count.
std::size_t format_decimal(std::uint64_t v, char* out) noexcept {
  std::array<char, 20> reversed{};
  std::size_t n = 0;
  do {
    reversed[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (std::size_t i = 0; i < n; ++i) out[i] = reversed[n - 1 - i];
  return n;
}

bool is_regular_file(int fd) noexcept {
  struct stat info {};
  return ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
}

}  // namespace

Logger Logger::batched(int fd, LogLevel level, std::chrono::milliseconds delay,
                       std::size_t capacity) {
  Logger log(fd, level);
  if (fd >= 0 && level != LogLevel::quiet) {
    log.batch_ = std::make_shared<Batch>(fd, delay, capacity);
  }
  return log;
}

Logger::Batch::Batch(int fd, std::chrono::milliseconds delay, std::size_t capacity)
    : fd_(fd), delay_(delay), capacity_(capacity), whole_writes_(is_regular_file(fd)) {
  // Room for the lines and for the note about dropped ones, so appending never allocates.
  pending_.reserve(capacity_ + kNoteRoom);
  writing_.reserve(capacity_ + kNoteRoom);
  // A library thread must never take the process's signals: they belong to the program (and
  // to StopOnSignals' sigwait).
  const detail::BlockedSignals blocked;
  thread_ = std::thread([this] { run(); });
}

Logger::Batch::~Batch() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    leaving_ = true;
  }
  wake_.notify_one();
  thread_.join();  // bounded: a stalled reader gets kExitPatience, then the rest is dropped
}

void Logger::Batch::add(std::initializer_list<std::string_view> pieces, bool output) noexcept {
  std::size_t size = 0;
  for (const std::string_view piece : pieces) size += piece.size();
  const std::lock_guard<std::mutex> lock(mutex_);
  if (pending_.size() + size > capacity_ || (output && pending_output_ + size > capacity_ / 2)) {
    ++dropped_;
    return;
  }
  if (output) pending_output_ += size;
  const bool was_empty = pending_.empty();
  // Within the reserved capacity: no allocation, so nothing here can throw.
  for (const std::string_view piece : pieces) pending_.append(piece);
  if (was_empty) wake_.notify_one();
}

void Logger::Batch::flush() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  const std::uint64_t wanted = ++flushes_asked_;
  wake_.notify_one();
  // Bounded as the writer's own wait for a stalled reader is, plus a delay's worth.
  (void)flushed_.wait_for(lock, kExitPatience + delay_,
                          [this, wanted] { return flushes_done_ >= wanted; });
}

void Logger::Batch::run() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto hurry = [this] { return leaving_.load() || flushes_asked_ != flushes_done_; };
  for (;;) {
    wake_.wait(lock, [this, &hurry] { return hurry() || !pending_.empty(); });
    // Give the lines of the next moments a chance to share this write.
    if (!hurry()) wake_.wait_for(lock, delay_, hurry);
    pending_.swap(writing_);
    pending_output_ = 0;
    const std::uint64_t dropped = std::exchange(dropped_, 0);
    const bool last = leaving_.load(std::memory_order_relaxed);
    // Every flush asked for so far covers only lines already added: these.
    const std::uint64_t covered = flushes_asked_;
    lock.unlock();
    write_out(dropped);
    lock.lock();
    flushes_done_ = covered;
    flushed_.notify_all();
    if (last && pending_.empty()) return;
  }
}

void Logger::Batch::write_out(std::uint64_t dropped) noexcept {
  if (dropped != 0) {
    // Said once the reader has caught up, so the gap in the log is explained where it is.
    detail::LineBuffer note;
    detail::append_timestamp(note);
    note.append("log: ");
    std::array<char, 20> digits{};
    note.append(std::string_view(digits.data(), format_decimal(dropped, digits.data())));
    note.append(" lines dropped: the log's reader fell behind\n");
    writing_.append(note.view());
  }
  std::string_view rest = writing_;
  while (!rest.empty() && writable()) {
    // A pipe or socket that polls writable has room for PIPE_BUF bytes, so a write of that
    // much never blocks; a regular file takes everything at once.
    const std::size_t size =
        whole_writes_ ? rest.size() : std::min<std::size_t>(rest.size(), PIPE_BUF);
    const ssize_t n = retry_eintr([&] { return ::write(fd_, rest.data(), size); });
    if (n < 0 && errno == EAGAIN) continue;
    // A failed log write (stderr closed, disk full) must not take the server down: drop it.
    if (n <= 0) break;
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  writing_.clear();
}

bool Logger::Batch::writable() const noexcept {
  if (whole_writes_) return true;
  const auto give_up = std::chrono::steady_clock::now() + kExitPatience;
  for (;;) {
    pollfd ready{fd_, POLLOUT, 0};
    const int n = poll_until(&ready, 1, Clock::now() + std::chrono::milliseconds(kPollStep));
    if (n > 0) return (ready.revents & POLLNVAL) == 0;
    if (n < 0) return false;
    if (leaving_.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() >= give_up) {
      return false;
    }
  }
}

}  // namespace sockecho
