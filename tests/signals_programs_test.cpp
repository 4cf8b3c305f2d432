// sockecho-server's signals, on the real program: SIGUSR1's stats line, and the signals that must
// never stop it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/buffer.hpp"
#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::kPrefix;
using test::ServerProcess;

// How many times text occurs in s.
std::size_t occurrences(std::string_view s, std::string_view text) {
  std::size_t count = 0;
  for (std::size_t at = s.find(text); at != std::string_view::npos; at = s.find(text, at + 1)) {
    ++count;
  }
  return count;
}

// Reads the server's stderr until `count` connection lines have come: a connection's counters
// are updated just before its line is logged, not before its client has the reply.
void wait_for_connection_lines(test::Child& server, std::size_t count) {
  const auto deadline = Clock::now() + test::kPatience;
  while (occurrences(server.err(), " conn peer=") < count && Clock::now() < deadline) {
    (void)server.stderr_line(100ms);
  }
  ASSERT_EQ(occurrences(server.err(), " conn peer="), count) << server.err();
}

// The stats line's text after "stats " for n requests of `request` bytes, all answered.
std::string stats_after(std::uint64_t n, std::size_t request) {
  ServerStats stats;
  stats.accepted = n;
  stats.outcomes[static_cast<std::size_t>(Outcome::ok)] = n;
  stats.bytes_in = n * request;
  stats.bytes_out = n * (kPrefix.size() + request);
  return format_stats(stats);
}

TEST(SignalsProgram, Sigusr1WritesOneStatsLineAndTheServerGoesOn) {
  ServerProcess server({"--workers", "2"});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(request("127.0.0.1", server.port(), "hello"), kPrefix + "hello");
  }
  wait_for_connection_lines(server, 3);
  server.signal(SIGUSR1);
  const std::optional<std::string> stats = server.wait_stderr(" stats ");
  ASSERT_TRUE(stats) << server.err();
  // "2026-11-25T21:41:10.123Z stats accepted=3 active=0 ok=3 ... bytes_in=15 bytes_out=45"
  EXPECT_EQ(stats->substr(stats->find(" stats ")), " stats " + stats_after(3, 5)) << *stats;

  EXPECT_EQ(request("127.0.0.1", server.port(), "again"), kPrefix + "again");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_EQ(occurrences(server.err(), " stats "), 1U) << server.err();
  EXPECT_NE(server.err().find(" stop accepted=4 ok=4"), std::string::npos) << server.err();
}

TEST(SignalsProgram, QuietStillWritesTheStatsLineItWasAskedFor) {
  ServerProcess server({"--quiet"});
  ASSERT_EQ(request("127.0.0.1", server.port(), "x"), kPrefix + "x");
  server.signal(SIGUSR1);
  const std::optional<std::string> line = server.stderr_line();
  ASSERT_TRUE(line) << server.err();
  // The connection's counters may not be in yet (the client had its reply first): only the
  // accept is certain.
  EXPECT_NE(line->find(" stats accepted=1 "), std::string::npos) << *line;
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
  EXPECT_EQ(occurrences(server.err(), "\n"), 1U) << "only the stats line: " << server.err();
}

// A second stop signal ends the server at once, killed by that signal: the shell's 128 + its
// number, as docs/operations.md's exit codes and the man page's EXIT STATUS say.
TEST(SignalsProgram, ASecondStopSignalKillsItWithThatSignal) {
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) {
    SCOPED_TRACE(signal);
    ServerProcess server({"--verbose"});
    // A connection in flight (accepted: its open line is logged) keeps the drain going.
    const Connection held = connect("127.0.0.1", server.port(), test::kPatience);
    ASSERT_TRUE(server.wait_stderr(" open peer=")) << server.err();
    server.signal(signal);
    ASSERT_TRUE(server.wait_stderr("stopping: no new connections; in flight=1")) << server.err();
    server.signal(signal);
    EXPECT_EQ(server.wait(), std::optional<int>(128 + signal)) << server.err();
    EXPECT_EQ(occurrences(server.err(), " stop accepted="), 0U)
        << "no clean stop: " << server.err();
  }
}

// The log writes in batches, 50 ms late; a second stop signal ends the process at once, so what
// the log holds is written first: here the start lines, logged just after the ready line, and
// those of the first stop, all well within 50 ms of the end.
TEST(SignalsProgram, ASecondStopSignalWritesWhatTheLogHoldsFirst) {
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    // An acknowledged job keeps the first stop draining until the second signal comes.
    ServerProcess server({"--background", "--exec", "sleep", "30"});
    ASSERT_EQ(request("127.0.0.1", server.port(), "job").rfind("accepted ", 0), 0U);
    // Two different signals, so the kernel cannot merge them into one: whichever the server
    // takes first stops it, the other ends it.
    server.signal(SIGTERM);
    server.signal(SIGINT);
    const std::optional<int> status = server.wait();
    EXPECT_TRUE(status == 128 + SIGINT || status == 128 + SIGTERM) << server.err();
    for (const std::string line : {" jobs: start mode=background ", " start listen=127.0.0.1:",
                                   " stopping: ", " jobs: abandoned "}) {
      EXPECT_NE(server.err().find(line), std::string::npos) << line << " missing:\n"
                                                            << server.err();
    }
    EXPECT_LT(server.err().find(" stopping: "), server.err().find(" jobs: abandoned "))
        << "in the order they happened: " << server.err();
  }
}

TEST(SignalsProgram, SignalsWithNothingToDoNeverStopIt) {
  ServerProcess server({"--quiet"});
  for (const int signal : {SIGUSR2, SIGPIPE, SIGWINCH, SIGALRM}) {
    for (int i = 0; i < 5; ++i) server.signal(signal);
    EXPECT_EQ(request("127.0.0.1", server.port(), "still"), kPrefix + "still")
        << "after signal " << signal;
  }
  server.signal(SIGTERM);
  // A default action would have ended it with 128 + the signal's number.
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_EQ(server.err(), "");
}

TEST(SignalsProgram, AStormOfSigusr1WhileClientsRunCostsNoReply) {
  ServerProcess server({"--workers", "4"});
  constexpr int kClients = 4;
  constexpr int kRequests = 50;
  std::atomic<int> wrong{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequests; ++i) {
        const std::string text = "client " + std::to_string(c) + " request " + std::to_string(i);
        try {
          if (request("127.0.0.1", server.port(), text) != kPrefix + text) ++wrong;
        } catch (const std::system_error&) {
          ++wrong;
        }
      }
    });
  }
  std::thread storm([&] {
    while (!done) {
      server.signal(SIGUSR1);
      std::this_thread::sleep_for(1ms);  // ok-sleep: paces the storm, waits for nothing
    }
  });
  for (std::thread& client : clients) client.join();
  done = true;
  storm.join();
  EXPECT_EQ(wrong, 0);

  constexpr std::size_t kTotal = static_cast<std::size_t>(kClients) * kRequests;
  wait_for_connection_lines(server, kTotal);
  server.signal(SIGUSR1);
  const std::string total = std::to_string(kTotal);
  ASSERT_TRUE(server.wait_stderr(" stats accepted=" + total + " active=0 ok=" + total + " "))
      << server.err();
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  // Each stats line whole, on a line of its own; the kernel merges signals that arrive while
  // one waits, so there are fewer lines than signals, but at least the last one.
  const std::string& err = server.err();
  std::size_t lines = 0;
  for (std::size_t at = err.find(" stats "); at != std::string::npos;
       at = err.find(" stats ", at + 1)) {
    ++lines;
    const std::size_t start =
        err.rfind('\n', at) == std::string::npos ? 0 : err.rfind('\n', at) + 1;
    const std::string line = err.substr(start, err.find('\n', at) - start);
    EXPECT_EQ(line.find(" stats accepted="), 24U) << line;
    EXPECT_NE(line.find(" bytes_out="), std::string::npos) << line;
  }
  EXPECT_GE(lines, 1U);
  EXPECT_NE(err.find(" stop accepted=" + total + " ok=" + total), std::string::npos) << err;
}

TEST(SignalsProgram, AChattyLineClientCannotHoldAStopOpen) {
  // --timeout 2 is the idle limit: a client sending a line every 0.2 s never reaches it.
  ServerProcess server({"--mode", "line", "--timeout", "2"});
  Connection client = connect("127.0.0.1", server.port(), test::kPatience);
  client.set_timeout(test::kPatience);
  std::atomic<bool> ended{false};
  std::atomic<int> answered{0};
  std::thread reader([&] {
    Buffer buffer;
    try {
      while (client.read_into(buffer) > 0) {
        answered = static_cast<int>(occurrences(buffer.view(), "\n"));
      }
    } catch (const std::system_error&) {
      // A line the client wrote after the server closed the session is answered by the kernel
      // with a reset, which may come before the end is read: what was answered still counts.
    }
    ended = true;
  });
  const auto chat = [&](int lines) {
    for (int i = 0; i < lines && !ended; ++i) {
      try {
        client.write_all("line " + std::to_string(i) + "\n");
      } catch (const std::system_error&) {
        return;
      }
      std::this_thread::sleep_for(200ms);  // the client's own pace, not a wait for the server
    }
  };
  chat(3);
  const auto stop = Clock::now();
  server.signal(SIGTERM);
  chat(40);  // 8 s more of chatting, were the server to wait for it
  const std::optional<int> status = server.wait();
  const auto took = Clock::now() - stop;
  try {
    client.close_write();
  } catch (const std::system_error&) {  // reset, as above
  }
  reader.join();
  EXPECT_EQ(status, 0) << server.err();
  EXPECT_LT(took, 2s) << "the stop waited for the client";
  EXPECT_TRUE(ended);
  EXPECT_GE(answered.load(), 4) << "the greeting and the lines before the stop";
  EXPECT_NE(server.err().find(" outcome=ok"), std::string::npos) << server.err();
}

TEST(SignalsProgram, ALineBegunAtTheStopIsAnsweredThenTheSessionEnds) {
  ServerProcess server({"--mode", "line", "--prefix", "", "--verbose"});
  Connection client = connect("127.0.0.1", server.port(), test::kPatience);
  client.set_timeout(test::kPatience);
  Buffer greeting;
  (void)client.read_into(greeting);
  client.write_all("whole\nbeg");
  Buffer first;
  while (occurrences(first.view(), "\n") < 1) ASSERT_GT(client.read_into(first), 0U);
  EXPECT_EQ(first.view(), "whole\n");
  server.signal(SIGTERM);
  ASSERT_TRUE(server.wait_stderr("stopping:")) << server.err();
  client.write_all("un\n");  // the line begun before the stop ends
  Buffer rest;
  while (client.read_into(rest) > 0) {
  }
  EXPECT_EQ(rest.view(), "begun\n");
  EXPECT_EQ(server.wait(), 0) << server.err();
}

}  // namespace
}  // namespace sockecho
