// The request bytes sockecho-bench sends and the tests check replies against: header-only, so
// the tests use the same bytes without linking any of tools/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sockecho::bench {

// A fixed pattern of `size` bytes covering every byte value (xorshift32: no short period).
[[nodiscard]] inline std::string make_payload(std::size_t size) {
  std::string data(size, '\0');
  std::uint32_t state = 2463534242U;
  for (char& c : data) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    c = static_cast<char>(state & 0xff);
  }
  return data;
}

}  // namespace sockecho::bench
