// Shared pieces of sockecho's fuzz targets: reading structured choices from the fuzzer's bytes,
// and checks that abort (so libFuzzer, or the corpus replay under CTest, reports a crash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

// Every target defines this; libFuzzer calls it, and so does replay_main.cpp without libFuzzer.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace sockecho::fuzz {

// Aborts with a message naming the broken promise. Used instead of assert() so it also holds in
// builds with NDEBUG.
inline void check(bool ok, const char* what, const char* file, int line) {
  if (ok) return;
  (void)std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
  std::abort();
}

#define SOCKECHO_FUZZ_CHECK(condition) \
  ::sockecho::fuzz::check((condition), #condition, __FILE__, __LINE__)

// Takes choices off the front of the input and leaves the rest as the payload. Every call is
// defined on any input: an exhausted input yields zeros and empty views.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  // One byte, 0 when none is left.
  std::uint8_t byte() {
    if (rest_.empty()) return 0;
    const auto b = static_cast<std::uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  // A little-endian number of `bytes` bytes (at most 8).
  std::uint64_t number(int bytes) {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= std::uint64_t{byte()} << (8 * i);
    return value;
  }
  // Up to n bytes.
  std::string_view take(std::size_t n) {
    const std::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(out.size());
    return out;
  }
  [[nodiscard]] std::string_view rest() const { return rest_; }
  [[nodiscard]] bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

}  // namespace sockecho::fuzz
