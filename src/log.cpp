#include "sockecho/log.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

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

// One log line built in a fixed array, so the line written for every connection allocates
// nothing. A line that does not fit (a long error message) is marked overflowed.
class LineBuffer {
 public:
  void append(std::string_view text) noexcept {
    if (text.size() > data_.size() - size_) {
      overflowed_ = true;
      return;
    }
    std::memcpy(data_.data() + size_, text.data(), text.size());
    size_ += text.size();
  }
  void append(char c) noexcept { append(std::string_view(&c, 1)); }
  void append(const ConnectionRecord& record) noexcept {
    const std::size_t n = format_record(record, data_.data() + size_, data_.size() - size_);
    if (n == 0) overflowed_ = true;
    size_ += n;
  }
  [[nodiscard]] std::string_view view() const noexcept { return {data_.data(), size_}; }
  [[nodiscard]] bool overflowed() const noexcept { return overflowed_; }

 private:
  std::array<char, 512> data_{};
  std::size_t size_ = 0;
  bool overflowed_ = false;
};

// "2026-11-25T21:48:35.692Z ": the date and time are formatted once a second per thread, the
// milliseconds every time.
void append_timestamp(LineBuffer& line) noexcept {
  thread_local time_t cached_second = -1;
  thread_local std::array<char, 24> cached{};  // "2026-11-25T21:48:35."
  thread_local std::size_t cached_size = 0;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  if (now.tv_sec != cached_second) {
    tm utc{};
    ::gmtime_r(&now.tv_sec, &utc);
    const int n = std::snprintf(cached.data(), cached.size(), "%04d-%02d-%02dT%02d:%02d:%02d.",
                                utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                                utc.tm_min, utc.tm_sec);
    cached_size = n > 0 ? std::min(static_cast<std::size_t>(n), cached.size() - 1) : 0;
    cached_second = now.tv_sec;
  }
  line.append(std::string_view(cached.data(), cached_size));
  const auto ms = static_cast<unsigned>(now.tv_nsec / 1000000);
  const std::array<char, 5> tail = {static_cast<char>('0' + ms / 100),
                                    static_cast<char>('0' + ms / 10 % 10),
                                    static_cast<char>('0' + ms % 10), 'Z', ' '};
  line.append(std::string_view(tail.data(), tail.size()));
}

}  // namespace

void Logger::connection(const ConnectionRecord& record) const noexcept {
  if (!enabled(LogLevel::normal)) return;
  LineBuffer line;
  append_timestamp(line);
  line.append(record);
  line.append('\n');
  if (!line.overflowed()) {
    emit({line.view()});
    return;
  }
  try {
    write_line(format_record(record));
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop the line
  }
}

void Logger::event(LogLevel level, std::string_view text) const noexcept {
  if (enabled(level)) write_line(text);
}

void Logger::write_line(std::string_view text) const noexcept {
  LineBuffer stamp;
  append_timestamp(stamp);
  emit({stamp.view(), text, "\n"});
}

// The shared state of a batching Logger: lines waiting, and the thread that writes them.
class Logger::Batch {
 public:
  Batch(int fd, std::chrono::milliseconds delay, std::size_t capacity)
      : fd_(fd), delay_(delay), capacity_(capacity), whole_writes_(is_regular_file(fd)) {
    // Room for the lines and for the note about dropped ones, so appending never allocates.
    pending_.reserve(capacity_ + kNoteRoom);
    writing_.reserve(capacity_ + kNoteRoom);
    // A library thread must never take the process's signals: they belong to the program (and
    // to StopOnSignals' sigwait). A thread starts with its creator's mask, so block everything
    // around its creation; it then has no moment in which a signal could reach it.
    sigset_t all;
    sigset_t before;
    sigfillset(&all);
    const int err = ::pthread_sigmask(SIG_BLOCK, &all, &before);
    if (err != 0) throw os_error(err, "pthread_sigmask");
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      (void)::pthread_sigmask(SIG_SETMASK, &before, nullptr);
      throw;
    }
    (void)::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  Batch(Batch&&) = delete;
  Batch& operator=(Batch&&) = delete;
  ~Batch() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      leaving_ = true;
    }
    wake_.notify_one();
    thread_.join();  // bounded: a stalled reader gets kExitPatience, then the rest is dropped
  }

  void add(std::initializer_list<std::string_view> pieces) noexcept {
    std::size_t size = 0;
    for (const std::string_view piece : pieces) size += piece.size();
    const std::lock_guard<std::mutex> lock(mutex_);
    if (pending_.size() + size > capacity_) {
      ++dropped_;
      return;
    }
    const bool was_empty = pending_.empty();
    // Within the reserved capacity: no allocation, so nothing here can throw.
    for (const std::string_view piece : pieces) pending_.append(piece);
    if (was_empty) wake_.notify_one();
  }

 private:
  void run() noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return leaving_ || !pending_.empty(); });
      // Give the lines of the next moments a chance to share this write.
      if (!leaving_) wake_.wait_for(lock, delay_, [this] { return leaving_.load(); });
      pending_.swap(writing_);
      const std::uint64_t dropped = std::exchange(dropped_, 0);
      const bool last = leaving_.load(std::memory_order_relaxed);
      lock.unlock();
      write_out(dropped);
      lock.lock();
      if (last && pending_.empty()) return;
    }
  }

  void write_out(std::uint64_t dropped) noexcept {
    if (dropped != 0) {
      // Said once the reader has caught up, so the gap in the log is explained where it is.
      LineBuffer note;
      append_timestamp(note);
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
      const ssize_t n = ::write(fd_, rest.data(), size);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      // A failed log write (stderr closed, disk full) must not take the server down: drop it.
      if (n <= 0) break;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    writing_.clear();
  }

  // Waits until the descriptor can take more. False to give up: it failed, or the logger is
  // going away and the reader has not made room for kExitPatience.
  bool writable() const noexcept {
    if (whole_writes_) return true;
    const auto give_up = std::chrono::steady_clock::now() + kExitPatience;
    for (;;) {
      pollfd ready{fd_, POLLOUT, 0};
      const int n = ::poll(&ready, 1, kPollStep);
      if (n > 0) return (ready.revents & POLLNVAL) == 0;
      if (n < 0 && errno != EINTR) return false;
      if (leaving_.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() >= give_up) {
        return false;
      }
    }
  }

  static bool is_regular_file(int fd) noexcept {
    struct stat info {};
    return ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
  }

  // How long a writer waits for a stalled reader once the logger is going away, before dropping
  // what is left; and how often a wait looks whether it is.
  static constexpr std::chrono::seconds kExitPatience{1};
  static constexpr int kPollStep = 100;  // milliseconds
  static constexpr std::size_t kNoteRoom = 128;

  const int fd_;
  const std::chrono::milliseconds delay_;
  const std::size_t capacity_;
  const bool whole_writes_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::string pending_;  // guarded by mutex_
  std::string writing_;  // only the thread touches it
  std::uint64_t dropped_ = 0;
  // Set under mutex_ (for wake_), and also read without it by a writer waiting on a stalled
  // reader, which then gives up after kExitPatience.
  std::atomic<bool> leaving_{false};
  std::thread thread_;
};

Logger::Logger(int fd, LogLevel level, std::chrono::milliseconds delay, std::size_t capacity)
    : fd_(fd), level_(level) {
  if (fd >= 0 && level != LogLevel::quiet) batch_ = std::make_shared<Batch>(fd, delay, capacity);
}

void Logger::emit(std::initializer_list<std::string_view> pieces) const noexcept {
  if (batch_) {
    batch_->add(pieces);
    return;
  }
  std::array<iovec, 4> parts{};
  std::size_t used = 0;
  for (const std::string_view piece : pieces) {
    if (used == parts.size()) break;
    parts[used++] = {const_cast<char*>(piece.data()), piece.size()};
  }
  // One writev per line keeps lines whole. A failed log write (stderr closed, disk full) must not
  // take a connection down, so its result is deliberately ignored.
  (void)::writev(fd_, parts.data(), static_cast<int>(used));
}

}  // namespace sockecho
