#include "sockecho/line.hpp"

#include <cstring>

namespace sockecho {

std::optional<std::string_view> LineFramer::next(std::string_view data) noexcept {
  if (too_long_ || scanned_ >= data.size()) return std::nullopt;
  const void* found = std::memchr(data.data() + scanned_, '\n', data.size() - scanned_);
  if (found == nullptr) {
    scanned_ = data.size();
    return std::nullopt;
  }
  const auto end = static_cast<std::size_t>(static_cast<const char*>(found) - data.data());
  if (max_line_ != 0 && end - consumed_ > max_line_) {
    too_long_ = true;
    return std::nullopt;
  }
  const std::string_view line = data.substr(consumed_, end - consumed_);
  consumed_ = end + 1;
  scanned_ = consumed_;
  return line;
}

void LineFramer::discard() noexcept {
  scanned_ -= consumed_;
  consumed_ = 0;
}

bool LineFramer::too_long(std::size_t data_size) const noexcept {
  return too_long_ || (max_line_ != 0 && data_size - consumed_ > max_line_);
}

}  // namespace sockecho
