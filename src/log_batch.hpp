// sockecho (private): the shared state of a batching Logger (Logger::batched): lines waiting, and
// the thread of its own that writes them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "sockecho/log.hpp"

namespace sockecho {

class Logger::Batch {
 public:
  // Starts the writer thread, with every signal blocked. Throws std::system_error if it cannot.
  Batch(int fd, std::chrono::milliseconds delay, std::size_t capacity);
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  Batch(Batch&&) = delete;
  Batch& operator=(Batch&&) = delete;
  // Writes what is waiting (giving a stalled reader kExitPatience) and joins the thread.
  ~Batch();

  // Queues one line made of these pieces, or counts it as dropped when capacity is reached: for a
  // line of a program's output (`output`), half the capacity, so such lines never take the room
  // of the others. Never blocks on the descriptor and never allocates.
  void add(std::initializer_list<std::string_view> pieces, bool output = false) noexcept;
  // Returns once every line added before the call is written, or given up (a stalled reader
  // gets kExitPatience); the writer skips its delay for them.
  void flush() noexcept;

 private:
  void run() noexcept;
  void write_out(std::uint64_t dropped) noexcept;
  // Waits until the descriptor can take more. False to give up: it failed, or the logger is
  // going away and the reader has not made room for kExitPatience.
  [[nodiscard]] bool writable() const noexcept;

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
  std::condition_variable flushed_;
  // Flushes asked for, and those whose lines the writer has written (both guarded by mutex_).
  std::uint64_t flushes_asked_ = 0;
  std::uint64_t flushes_done_ = 0;
  std::string pending_;             // guarded by mutex_
  std::size_t pending_output_ = 0;  // of pending_, the bytes of program output (guarded by mutex_)
  std::string writing_;             // only the thread touches it
  std::uint64_t dropped_ = 0;
  // Set under mutex_ (for wake_), and also read without it by a writer waiting on a stalled
  // reader, which then gives up after kExitPatience.
  std::atomic<bool> leaving_{false};
  std::thread thread_;
};

}  // namespace sockecho
