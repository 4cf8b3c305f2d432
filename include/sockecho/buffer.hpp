// sockecho: a growable byte buffer that sockets read straight into.
#pragma once

#include <cstddef>
#include <string_view>

#include "sockecho/export.hpp"

namespace sockecho {

// A contiguous byte buffer with a filled part (data(), size()) followed by free room that a read
// can fill in place (tail(), room(), then commit()). Growing uses realloc, so glibc can grow a
// large block with mremap instead of copying it, and pages never written cost no memory.
class SOCKECHO_EXPORT Buffer {
 public:
  Buffer() noexcept = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  [[nodiscard]] char* data() noexcept { return data_; }
  [[nodiscard]] const char* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::string_view view() const noexcept { return {data_, size_}; }

  // The free room after the filled part, to read into.
  [[nodiscard]] char* tail() noexcept { return data_ + size_; }
  [[nodiscard]] std::size_t room() const noexcept { return capacity_ - size_; }
  // Marks n bytes of the room as filled; n <= room().
  void commit(std::size_t n) noexcept { size_ += n; }

  // Makes the capacity at least `capacity` bytes, keeping the contents. Throws std::bad_alloc.
  void reserve(std::size_t capacity);
  // Copies `bytes` after the contents, growing the capacity to exactly what they need when the
  // room is short. Throws std::bad_alloc.
  void append(std::string_view bytes);
  // The capacity a full buffer grows to before its next read: double (at least kInitial), and
  // never more than `limit` bytes (0: no limit). Every reader grows by this one rule, so a
  // memory budget can charge a growth before it happens.
  [[nodiscard]] std::size_t next_capacity(std::size_t limit) const noexcept;
  static constexpr std::size_t kInitial = std::size_t{64} * 1024;
  // Drops the contents, keeping the memory for reuse.
  void clear() noexcept { size_ = 0; }
  // Removes the first n bytes, moving the rest to the front; n <= size().
  void consume(std::size_t n) noexcept;
  // Frees the memory when the capacity is above `limit`, so one large request does not pin its
  // memory for the life of a worker.
  void trim(std::size_t limit) noexcept;

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace sockecho
