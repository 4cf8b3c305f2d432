#include "sockecho/line.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sockecho/buffer.hpp"

namespace sockecho {
namespace {

// Feeds `stream` to a framer in pieces of `piece` bytes, storing and dropping bytes the way the
// server does; returns the lines found, and whether the framer refused a line as too long.
struct Framed {
  std::vector<std::string> lines;
  std::string rest;
  bool too_long = false;
};

Framed frame(const std::string& stream, std::size_t piece, std::size_t max_line) {
  Framed out;
  std::string stored;
  LineFramer framer(max_line);
  for (std::size_t at = 0; at < stream.size() && !out.too_long; at += piece) {
    stored.append(stream, at, piece);
    while (auto line = framer.next(stored)) out.lines.emplace_back(*line);
    stored.erase(0, framer.consumed());
    framer.discard();
    out.too_long = framer.too_long(stored.size());
  }
  out.rest = stored;
  return out;
}

TEST(LineFramer, SplitsOnNewlinesWithoutThem) {
  const Framed f = frame("one\ntwo\n\nthree", 1000, 0);
  EXPECT_EQ(f.lines, (std::vector<std::string>{"one", "two", ""}));
  EXPECT_EQ(f.rest, "three");
  EXPECT_FALSE(f.too_long);
}

TEST(LineFramer, SameLinesWhateverThePieceSize) {
  const std::string stream = "alpha\nbeta\r\n\n\ngamma delta\nz";
  const Framed whole = frame(stream, stream.size(), 0);
  for (std::size_t piece = 1; piece <= stream.size(); ++piece) {
    const Framed f = frame(stream, piece, 0);
    EXPECT_EQ(f.lines, whole.lines) << "piece " << piece;
    EXPECT_EQ(f.rest, whole.rest) << "piece " << piece;
  }
  EXPECT_EQ(whole.lines.back(), "gamma delta");
  EXPECT_EQ(whole.lines[1], "beta\r") << "only '\\n' ends a line";
}

TEST(LineFramer, KeepsNulAndHighBytes) {
  const std::string stream("a\0b\n\xff\xfe\n", 7);
  const Framed f = frame(stream, 2, 0);
  ASSERT_EQ(f.lines.size(), 2U);
  EXPECT_EQ(f.lines[0], std::string("a\0b", 3));
  EXPECT_EQ(f.lines[1], "\xff\xfe");
}

TEST(LineFramer, ALineAtTheLimitIsAccepted) {
  const Framed f = frame("1234\n", 1, 4);
  EXPECT_EQ(f.lines, (std::vector<std::string>{"1234"}));
  EXPECT_FALSE(f.too_long);
}

TEST(LineFramer, ACompleteLineOverTheLimitIsRefused) {
  const Framed f = frame("ok\n12345\nnever\n", 100, 4);
  EXPECT_EQ(f.lines, (std::vector<std::string>{"ok"}));
  EXPECT_TRUE(f.too_long);
}

TEST(LineFramer, AnUnterminatedRestOverTheLimitIsRefusedEarly) {
  // Byte by byte: the fifth byte without '\n' already proves the line too long.
  const Framed f = frame("12345678", 1, 4);
  EXPECT_TRUE(f.too_long);
  EXPECT_EQ(f.rest, "12345") << "nothing is stored past limit + 1";
}

TEST(LineFramer, NoDataNoLine) {
  LineFramer framer(4);
  EXPECT_FALSE(framer.next("").has_value());
  EXPECT_EQ(framer.consumed(), 0U);
  EXPECT_FALSE(framer.too_long(0));
}

TEST(LineFramer, WorksOnABufferThatGrowsAndMoves) {
  Buffer buffer;
  LineFramer framer;
  std::vector<std::string> lines;
  for (int i = 0; i < 1000; ++i) {
    const std::string piece = std::to_string(i) + (i % 3 == 0 ? "\n" : "-");
    buffer.reserve(buffer.size() + piece.size());
    piece.copy(buffer.tail(), piece.size());
    buffer.commit(piece.size());
    while (auto line = framer.next(buffer.view())) lines.emplace_back(*line);
    buffer.consume(framer.consumed());
    framer.discard();
  }
  ASSERT_EQ(lines.size(), 334U);
  EXPECT_EQ(lines[0], "0");
  EXPECT_EQ(lines[1], "1-2-3");
}

}  // namespace
}  // namespace sockecho
