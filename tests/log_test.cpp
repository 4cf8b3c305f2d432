// The log writer: lines whole and in order, written directly or in batches, and a reader that
// stalls costs lines, never the callers or the shutdown.
#include "sockecho/log.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sockecho/fd.hpp"
#include "sockecho/record.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::make_pipe;
using test::Pipe;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Logs `per_thread` events from each of `threads` threads, "t<thread> n<i>", and returns what
// reached the pipe once the logger is gone.
std::string log_from_threads(bool batched, int threads, int per_thread) {
  Pipe pipe = make_pipe();
  std::string out;
  std::thread reader([&] { out = test::read_all(pipe.read.get()); });
  {
    const Logger log =
        batched ? Logger::batched(pipe.write.get(), LogLevel::normal, std::chrono::milliseconds(20))
                : Logger(pipe.write.get(), LogLevel::normal);
    std::vector<std::thread> writers;
    writers.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      writers.emplace_back([&log, t, per_thread] {
        for (int i = 0; i < per_thread; ++i) {
          log.event(LogLevel::normal, "t" + std::to_string(t) + " n" + std::to_string(i));
        }
      });
    }
    for (auto& w : writers) w.join();
  }  // the last copy of a batched logger writes what is left before it goes
  pipe.write.reset();
  reader.join();
  return out;
}

void expect_whole_and_ordered(const std::string& out, int threads, int per_thread) {
  std::map<int, int> next;  // thread -> the number its next line must carry
  int count = 0;
  for (const std::string& line : lines_of(out)) {
    // "2026-11-25T21:41:10.123Z t3 n17"
    ASSERT_GT(line.size(), 25U) << line;
    ASSERT_EQ(line[23], 'Z') << line;
    std::istringstream fields(line.substr(25));
    char t_mark = 0;
    char n_mark = 0;
    int t = -1;
    int n = -1;
    ASSERT_TRUE(fields >> t_mark >> t >> n_mark >> n) << line;
    ASSERT_EQ(t_mark, 't');
    ASSERT_EQ(n_mark, 'n');
    EXPECT_EQ(n, next[t]) << "thread " << t << " lost or reordered a line";
    next[t] = n + 1;
    ++count;
  }
  EXPECT_EQ(count, threads * per_thread);
}

TEST(Logger, DirectLinesAreWholeAndInOrder) {
  expect_whole_and_ordered(log_from_threads(false, 4, 500), 4, 500);
}

TEST(Logger, BatchedLinesAreWholeInOrderAndAllWrittenAtTheEnd) {
  expect_whole_and_ordered(log_from_threads(true, 4, 5000), 4, 5000);
}

TEST(Logger, BatchedLinesArriveWithoutWaitingForTheEnd) {
  Pipe pipe = make_pipe();
  const Logger log =
      Logger::batched(pipe.write.get(), LogLevel::normal, std::chrono::milliseconds(10));
  log.event(LogLevel::normal, "soon");
  std::array<char, 256> got{};
  // A blocking read: returns once the batch is written, well before the logger goes.
  const ssize_t n = ::read(pipe.read.get(), got.data(), got.size());
  ASSERT_GT(n, 0);
  EXPECT_NE(std::string(got.data(), static_cast<std::size_t>(n)).find(" soon\n"),
            std::string::npos);
}

// What a process about to end without its destructors (a second stop signal) calls: every line
// logged so far is in the pipe when flush() returns, the batch's hour-long delay skipped.
TEST(Logger, FlushWritesEveryLineLoggedSoFarBeforeItReturns) {
  Pipe pipe = make_pipe();
  const Logger log = Logger::batched(pipe.write.get(), LogLevel::normal, std::chrono::hours(1));
  ASSERT_EQ(::fcntl(pipe.read.get(), F_SETFL, O_NONBLOCK), 0);
  std::string got;
  for (const std::string line : {"first", "second"}) {
    log.event(LogLevel::normal, line);
    const auto start = std::chrono::steady_clock::now();
    log.flush();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
    std::array<char, 256> chunk{};
    for (ssize_t n = 0; (n = ::read(pipe.read.get(), chunk.data(), chunk.size())) > 0;) {
      got.append(chunk.data(), static_cast<std::size_t>(n));
    }
    EXPECT_NE(got.find(" " + line + "\n"), std::string::npos) << got;
  }
  log.flush();       // nothing waiting: returns at once
  Logger().flush();  // a logger that writes nowhere: nothing to do
}

TEST(Logger, LevelsFilterBeforeAnythingIsWritten) {
  Pipe pipe = make_pipe();
  {
    const Logger log =
        Logger::batched(pipe.write.get(), LogLevel::quiet, std::chrono::milliseconds(10));
    EXPECT_TRUE(log.enabled(LogLevel::quiet));
    EXPECT_FALSE(log.enabled(LogLevel::normal));
    log.event(LogLevel::normal, "hidden");
    log.event(LogLevel::quiet, "shown");
  }
  pipe.write.reset();
  const std::string out = test::read_all(pipe.read.get());
  EXPECT_EQ(out.find("hidden"), std::string::npos);
  EXPECT_NE(out.find(" shown\n"), std::string::npos);
}

TEST(Logger, AStalledReaderBlocksNeitherTheCallersNorTheShutdown) {
  Pipe pipe = make_pipe();       // nobody reads it until the end: it fills at 64 KiB
  constexpr int kLines = 20000;  // about 1 MiB of lines
  {
    const Logger log = Logger::batched(pipe.write.get(), LogLevel::normal,
                                       std::chrono::milliseconds(5), std::size_t{64} * 1024);
    for (int i = 0; i < kLines; ++i) log.event(LogLevel::normal, "line " + std::to_string(i));
  }  // returns: the writer gives up on the stalled pipe instead of hanging the destructor
  pipe.write.reset();
  const std::vector<std::string> lines = lines_of(test::read_all(pipe.read.get()));
  ASSERT_FALSE(lines.empty());
  EXPECT_LT(lines.size(), static_cast<std::size_t>(kLines)) << "more lines than the pipe holds";
  EXPECT_NE(lines.front().find(" line 0"), std::string::npos) << lines.front();
}

TEST(Logger, DroppedLinesAreCountedInALaterLine) {
  Pipe pipe = make_pipe();
  {
    // 4 KiB may wait at once: a burst of about 40 KiB in one go overflows it between two
    // writes. What is written stays far below the pipe's 64 KiB, so nothing here blocks.
    const Logger log =
        Logger::batched(pipe.write.get(), LogLevel::normal, std::chrono::milliseconds(5), 4096);
    for (int i = 0; i < 1000; ++i) log.event(LogLevel::normal, "burst " + std::to_string(i));
    log.event(LogLevel::normal, "after");
  }
  pipe.write.reset();
  const std::string out = test::read_all(pipe.read.get());
  EXPECT_NE(out.find(" lines dropped: the log's reader fell behind\n"), std::string::npos) << out;
  EXPECT_NE(out.find(" burst 0\n"), std::string::npos);
  EXPECT_LT(lines_of(out).size(), 1000U);
}

TEST(Logger, AQuietDefaultLoggerWritesNothing) {
  const Logger log;
  EXPECT_FALSE(log.enabled(LogLevel::quiet));
  log.event(LogLevel::quiet, "nowhere");  // must not crash or write to descriptor -1
}

}  // namespace
}  // namespace sockecho

namespace sockecho {
namespace {

TEST(Quoted, OutsideTextCannotEndItsValueOrStartALine) {
  EXPECT_EQ(log_quoted("plain text"), "\"plain text\"");
  EXPECT_EQ(log_quoted("say \"hi\" \\ bye"), "\"say \\\"hi\\\" \\\\ bye\"");
  EXPECT_EQ(log_quoted("a\nb\rc\td"), "\"a\\nb\\rc\\td\"");
  EXPECT_EQ(log_quoted(std::string("\x1b[2J\0x\x7f", 7)), "\"\\x1b[2J\\x00x\\x7f\"");
  EXPECT_EQ(log_quoted("数据是 ok"), "\"数据是 ok\"") << "valid UTF-8 is kept";
  // Invalid UTF-8: a stray continuation byte, a cut sequence, an overlong form, a surrogate.
  EXPECT_EQ(log_quoted("\x80"), "\"\\x80\"");
  EXPECT_EQ(log_quoted("\xe6\x95"), "\"\\xe6\\x95\"");
  EXPECT_EQ(log_quoted("\xc0\xaf"), "\"\\xc0\\xaf\"");
  EXPECT_EQ(log_quoted("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"");
  EXPECT_EQ(log_quoted(""), "\"\"");
}

TEST(Logger, ProgramOutputNeverTakesTheRoomOfOtherLines) {
  Pipe pipe = make_pipe();
  std::string out;
  {
    // A small batch that nothing writes out before the logger goes: what fits is what is kept.
    const Logger log = Logger::batched(pipe.write.get(), LogLevel::normal, std::chrono::hours(1),
                                       /*capacity=*/4096);
    for (int i = 0; i < 500; ++i) log.output("exec pid=1 stderr=\"\"");
    for (int i = 0; i < 20; ++i) log.event(LogLevel::normal, "conn line " + std::to_string(i));
  }
  pipe.write.reset();
  out = test::read_all(pipe.read.get());
  for (int i = 0; i < 20; ++i) {
    EXPECT_NE(out.find("conn line " + std::to_string(i) + "\n"), std::string::npos) << i;
  }
  std::size_t outputs = 0;
  for (const std::string& line : lines_of(out)) outputs += line.find("exec pid=1") != line.npos;
  EXPECT_GT(outputs, 0U);
  EXPECT_LE(outputs * 45, std::size_t{4096} / 2) << "output keeps within half the capacity";
  EXPECT_LE(out.size(), std::size_t{4096} + 256) << "the batch's capacity holds";
  EXPECT_NE(out.find("lines dropped"), std::string::npos) << "the dropped output is counted";
}

}  // namespace
}  // namespace sockecho
