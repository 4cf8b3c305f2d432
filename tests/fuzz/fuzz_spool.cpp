// Fuzz target: the spool's record decoder (sockecho::decode_record) on arbitrary bytes. It must
// never read outside them, and a frame it accepts must be a record that encodes and decodes to
// itself. Inputs that start with a real frame get the checksum past the fuzzer's flips: byte 0
// says whether to recompute it over what follows the 12-byte head.
#include <cstdint>
#include <string>

#include "fuzz.hpp"
#include "sockecho/spool.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string frame(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1U) != 0 && frame.size() > 12) {
    // A frame whose body changed but whose checksum still fits it: the decoder's own checks.
    const std::uint32_t crc = sockecho::crc32c(std::string_view(frame).substr(12));
    for (int i = 0; i < 4; ++i) frame[8 + i] = static_cast<char>((crc >> (8 * i)) & 0xFFU);
  }
  const auto record = sockecho::decode_record(frame);
  if (record) {
    const auto again = sockecho::decode_record(sockecho::encode_record(*record));
    SOCKECHO_FUZZ_CHECK(again.has_value());
    SOCKECHO_FUZZ_CHECK(*again == *record);
  }
  return 0;
}
