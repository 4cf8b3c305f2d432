// sockecho: splitting a byte stream into lines, for line mode.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "sockecho/export.hpp"

namespace sockecho {

// Finds '\n'-terminated lines in bytes that arrive in pieces of any size. The caller keeps the
// bytes (e.g. in a Buffer) and passes all of them not yet discarded on every call; the framer
// remembers how far it has searched, so no byte is scanned twice.
class SOCKECHO_EXPORT LineFramer {
 public:
  // Lines longer than max_line bytes (not counting the '\n') are refused; 0 means no limit.
  explicit LineFramer(std::size_t max_line = 0) noexcept : max_line_(max_line) {}

  // The next complete line in data, without its '\n', or nullopt when data holds no further
  // complete line (or the next one is too long: see too_long()). The view points into data.
  std::optional<std::string_view> next(std::string_view data) noexcept;
  // Bytes of data taken by the lines returned so far, '\n' included: drop that many from the
  // front of the stored bytes, then call discard().
  [[nodiscard]] std::size_t consumed() const noexcept { return consumed_; }
  // Records that the first consumed() bytes were dropped from the caller's storage.
  void discard() noexcept;
  // True when a line over the limit was found, or the unterminated rest of data (data_size
  // bytes in all) is already over it.
  [[nodiscard]] bool too_long(std::size_t data_size) const noexcept;

 private:
  std::size_t max_line_;
  std::size_t consumed_ = 0;  // start of the current (unfinished) line
  std::size_t scanned_ = 0;   // bytes searched for '\n' so far
  bool too_long_ = false;
};

}  // namespace sockecho
