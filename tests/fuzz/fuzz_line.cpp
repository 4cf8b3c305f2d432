// Fuzz target: line mode's framer (sockecho::LineFramer) fed an arbitrary byte stream in pieces
// of fuzzer-chosen sizes, stored and dropped the way the server does, with a fuzzer-chosen line
// limit. The lines it finds, and where it refuses a line as too long, must match a plain
// reference splitter that sees the whole stream at once.
//
// Input: byte 0 and 1: the line limit (0 = none); byte 2: how many piece sizes follow (mod 16);
// then one byte per piece size (0 means 1); the rest is the stream. The piece sizes are used in
// turn, over and over.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz.hpp"
#include "sockecho/line.hpp"

namespace {

struct Result {
  std::vector<std::string_view> lines;  // complete lines, then the unterminated rest if any
  bool too_long = false;
};

// The meaning of line mode, written the obvious way: lines end at '\n'; the first line (or
// unterminated rest) over the limit ends the session, and nothing after it is answered.
Result reference(std::string_view stream, std::size_t max_line) {
  Result out;
  for (;;) {
    const std::size_t newline = stream.find('\n');
    const std::string_view line = stream.substr(0, newline);
    if (max_line != 0 && line.size() > max_line) {
      out.too_long = true;
      return out;
    }
    if (newline == std::string_view::npos) {
      if (!line.empty()) out.lines.push_back(line);
      return out;
    }
    out.lines.push_back(line);
    stream.remove_prefix(newline + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sockecho::fuzz::Input input(data, size);
  const auto max_line = static_cast<std::size_t>(input.number(2));
  std::vector<std::size_t> pieces(input.byte() % 16);
  for (std::size_t& piece : pieces) piece = input.byte();
  if (pieces.empty()) pieces.push_back(input.rest().size());
  const std::string_view stream = input.rest();

  // The framer, driven as Server::serve_line drives it.
  sockecho::LineFramer framer(max_line);
  std::string stored;  // bytes received and not yet dropped
  std::vector<std::string> lines;
  std::size_t fed = 0;
  std::size_t turn = 0;
  bool too_long = false;
  for (;;) {
    while (const std::optional<std::string_view> line = framer.next(stored)) {
      // The view lies inside the stored bytes, ends just before a '\n', and holds none itself.
      SOCKECHO_FUZZ_CHECK(line->data() >= stored.data() &&
                          line->data() + line->size() < stored.data() + stored.size());
      SOCKECHO_FUZZ_CHECK(line->data()[line->size()] == '\n');
      SOCKECHO_FUZZ_CHECK(line->find('\n') == std::string_view::npos);
      SOCKECHO_FUZZ_CHECK(max_line == 0 || line->size() <= max_line);
      lines.emplace_back(*line);
    }
    SOCKECHO_FUZZ_CHECK(framer.consumed() <= stored.size());
    stored.erase(0, framer.consumed());
    framer.discard();
    SOCKECHO_FUZZ_CHECK(framer.consumed() == 0);
    if (framer.too_long(stored.size())) {
      too_long = true;
      break;
    }
    if (fed == stream.size()) {  // end of stream: a last line without '\n' is answered too
      if (!stored.empty()) lines.push_back(stored);
      break;
    }
    const std::size_t piece = pieces[turn++ % pieces.size()];
    const std::string_view next = stream.substr(fed, piece == 0 ? 1 : piece);
    stored.append(next);
    fed += next.size();
  }
  // Once a line is too long the framer stays refusing, whatever more arrives.
  if (too_long) {
    stored.append("\nmore\n");
    SOCKECHO_FUZZ_CHECK(!framer.next(stored).has_value());
    SOCKECHO_FUZZ_CHECK(framer.too_long(stored.size()));
  }

  const Result expected = reference(stream, max_line);
  SOCKECHO_FUZZ_CHECK(too_long == expected.too_long);
  SOCKECHO_FUZZ_CHECK(lines.size() == expected.lines.size());
  for (std::size_t i = 0; i < lines.size() && i < expected.lines.size(); ++i) {
    SOCKECHO_FUZZ_CHECK(lines[i] == expected.lines[i]);
  }
  return 0;
}
