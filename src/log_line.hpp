// sockecho (private): one log line as it is built, shared by the direct writes (log.cpp) and the
// writer thread (log_batch.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <string_view>

#include "sockecho/record.hpp"

namespace sockecho::detail {

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

// Appends "2026-11-25T21:48:35.692Z ", the time now in UTC: every line starts with it.
void append_timestamp(LineBuffer& line) noexcept;

}  // namespace sockecho::detail
