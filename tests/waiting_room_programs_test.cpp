// sockecho-server's waiting room, run as a program: connections whose request is not complete
// hold no worker, so ten times the workers in tricklers (from many sources, or from one) do not
// stop a legitimate client; their deadlines run there as before; --max-connections leaves the
// rest in the kernel's backlog; and a stop answers what completes in the room.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
const std::string kPrefix = std::string(test::kPrefix);
// What a busy machine (or a sanitizer) may add to a deadline the server keeps.
constexpr std::chrono::milliseconds kSlack{400};

// A connection from `from` (a loopback address) that has sent `first` and not half-closed.
Connection held_from(const std::string& from, std::uint16_t port, const std::string& first) {
  ConnectOptions options;
  options.timeout = test::kPatience;
  options.source = resolve(from, 0).front();
  Connection c = connect(resolve("127.0.0.1", port).front(), options);
  c.set_timeout(test::kPatience);
  if (!first.empty()) c.write_all(first);
  return c;
}

std::string scrape(std::uint16_t metrics_port) {
  Connection c = connect("127.0.0.1", metrics_port, test::kPatience);
  c.set_timeout(test::kPatience);
  c.write_all("GET /metrics HTTP/1.0\r\n\r\n");
  return test::body_of(c.read_to_end_string());
}

// A gauge's value in an exposition; -1 when it is not there.
long gauge(const std::string& body, const std::string& name) {
  const std::string key = "\n" + name + " ";
  const std::size_t at = body.find(key);
  if (at == std::string::npos) return -1;
  return std::stol(body.substr(at + key.size()));
}

// Whether the waiting room comes to hold `count` connections (sockecho_connections_waiting),
// within kPatience; on failure, the last exposition read.
::testing::AssertionResult room_holds(std::uint16_t metrics_port, long count) {
  std::string body;
  if (test::eventually([&] {
        body = scrape(metrics_port);
        return gauge(body, "sockecho_connections_waiting") == count;
      })) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "the room holds not " << count << ":\n" << body;
}

// Whether a request sent now is answered within `within`.
bool answered_within(std::uint16_t port, const std::string& text,
                     std::chrono::milliseconds within) {
  RequestOptions options;
  options.timeout = within;
  try {
    return request("127.0.0.1", port, text, options) == kPrefix + text;
  } catch (const std::system_error&) {
    return false;
  }
}

// Ten times the workers in connections that each sent a byte and stopped, every one from a
// source of its own (127.1.0.X) or all from one (127.1.0.1, no per-source limit): a legitimate
// client is answered at once, every time, and the server holds them all without a worker.
void tricklers_do_not_stop_a_client(bool one_source) {
  constexpr int kWorkers = 4;
  constexpr int kHeld = 10 * kWorkers;
  test::MeteredServer server({"--workers", std::to_string(kWorkers), "--timeout", "20"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  std::vector<Connection> held;
  held.reserve(kHeld);
  for (int i = 0; i < kHeld; ++i) {
    const std::string from = "127.1.0." + std::to_string(one_source ? 1 : 1 + i);
    held.push_back(held_from(from, server.port(), "x"));
  }
  ASSERT_TRUE(room_holds(server.metrics_port(), kHeld));
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(answered_within(server.port(), "legit " + std::to_string(i), test::kPatience)) << i;
  }
  const std::string body = scrape(server.metrics_port());
  EXPECT_LE(gauge(body, "sockecho_workers"), kWorkers) << body;
  EXPECT_EQ(gauge(body, "sockecho_connections_active"), kHeld) << body;
  EXPECT_EQ(gauge(body, "sockecho_connections_max"), 10000) << body;
  // Each one held, once it completes, is answered too.
  for (int i = 0; i < kHeld; ++i) {
    held[static_cast<std::size_t>(i)].close_write();
    EXPECT_EQ(held[static_cast<std::size_t>(i)].read_to_end_string(), kPrefix + "x") << i;
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(WaitingRoomProgram, TenTimesTheWorkersInTricklersFromManySourcesStopNoClient) {
  tricklers_do_not_stop_a_client(false);
}

TEST(WaitingRoomProgram, TenTimesTheWorkersInTricklersFromOneSourceStopNoClient) {
  tricklers_do_not_stop_a_client(true);
}

// How long until the server ends a held connection, from `start`.
std::chrono::milliseconds ended_after(Connection& c, Clock::time_point start) {
  char byte = 0;
  try {
    while (c.read_some(&byte, 1) != 0) {
    }
  } catch (const std::system_error&) {  // the reset that ends it unanswered
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

TEST(WaitingRoomProgram, TheIdleLimitEndsASilentConnectionWithinItsValueAndAHalfSecond) {
  test::ServerProcess server({"--workers", "2", "--timeout", "0.3"});
  const Clock::time_point start = Clock::now();
  Connection silent = held_from("127.0.0.2", server.port(), "");
  const auto after = ended_after(silent, start);
  EXPECT_GE(after, 300ms);
  EXPECT_LE(after, 300ms + 500ms + kSlack) << "enforced as precisely as before";
  ASSERT_TRUE(server.wait_stderr(" outcome=timeout")) << server.err();
  EXPECT_TRUE(answered_within(server.port(), "after", test::kPatience));
}

TEST(WaitingRoomProgram, TheRequestLimitEndsATricklerThatKeepsSendingWithinItsValueAndAHalfSecond) {
  test::ServerProcess server({"--workers", "2", "--timeout", "10", "--request-timeout", "0.6"});
  const Clock::time_point start = Clock::now();
  Connection trickler = held_from("127.0.0.3", server.port(), "a");
  // A byte every 100 ms: never idle, never complete.
  bool reset = false;
  for (int i = 0; i < 30 && !reset; ++i) {
    std::this_thread::sleep_for(100ms);  // ok-sleep: the trickler's pace, bounded by its count
    try {
      trickler.write_all("b");
    } catch (const std::system_error&) {
      reset = true;
    }
  }
  const auto after = ended_after(trickler, start);
  EXPECT_GE(after, 600ms);
  EXPECT_LE(after, 600ms + 500ms + 100ms + kSlack);
  const std::optional<std::string> line = server.wait_stderr(" outcome=timeout");
  ASSERT_TRUE(line) << server.err();
}

TEST(WaitingRoomProgram, MaxConnectionsLeavesTheRestInTheBacklogUntilOneEnds) {
  test::MeteredServer server({"--workers", "2", "--max-connections", "5", "--timeout", "20"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  EXPECT_TRUE(server.wait_stderr(" max_connections=5")) << server.err();
  std::vector<Connection> held;
  held.reserve(5);
  for (int i = 0; i < 5; ++i) held.push_back(held_from("127.0.0.4", server.port(), "held"));
  ASSERT_TRUE(test::eventually(
      [&] { return gauge(scrape(server.metrics_port()), "sockecho_connections_active") == 5; }));
  // The sixth is connected by the kernel and waits in the backlog, unanswered...
  Connection sixth = held_from("127.0.0.5", server.port(), "sixth");
  sixth.close_write();
  sixth.set_timeout(300ms);
  char byte = 0;
  EXPECT_THROW((void)sixth.read_some(&byte, 1), std::system_error) << "answered past the limit";
  const std::string body = scrape(server.metrics_port());
  EXPECT_EQ(gauge(body, "sockecho_connections_max"), 5) << body;
  EXPECT_EQ(gauge(body, "sockecho_connections_active"), 5) << body;
  // ...until one of the five ends.
  held.front().close_write();
  EXPECT_EQ(held.front().read_to_end_string(), kPrefix + "held");
  sixth.set_timeout(test::kPatience);
  EXPECT_EQ(sixth.read_to_end_string(), kPrefix + "sixth");
  server.signal(SIGTERM);
  // The four still held hold the stop until they end: closed now, each is answered.
  for (std::size_t i = 1; i < held.size(); ++i) {
    held[i].close_write();
    EXPECT_EQ(held[i].read_to_end_string(), kPrefix + "held");
  }
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(WaitingRoomProgram, MaxConnectionsIsLoweredToWhatTheDescriptorHardLimitAllows) {
  // A hard limit of 200 descriptors: 80 workers and 16 of the daemon's own leave 104 for
  // connections held without a worker.
  test::Child child({"/usr/bin/prlimit", "--nofile=32:200", test::server_program(), "--port", "0",
                     "--workers", "80"});
  const std::optional<std::string> ready = child.stdout_line();
  ASSERT_TRUE(ready) << child.err();
  const std::optional<std::string> start = child.wait_stderr(" start ");
  ASSERT_TRUE(start) << child.err();
  EXPECT_NE(start->find(" max_connections=184"), std::string::npos) << *start;
  rlimit now{};
  ASSERT_EQ(::prlimit(child.pid(), RLIMIT_NOFILE, nullptr, &now), 0);
  EXPECT_EQ(now.rlim_cur, rlim_t{200});
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(), 0) << child.err();
}

TEST(WaitingRoomProgram, AStopAnswersWhatCompletesInTheRoomAndTakesNoNewConnection) {
  test::ServerProcess server({"--workers", "2", "--timeout", "20", "--verbose"});
  Connection waiting = held_from("127.0.0.6", server.port(), "begun");
  ASSERT_TRUE(server.wait_stderr(" open peer=127.0.0.6:")) << server.err();
  server.signal(SIGTERM);
  ASSERT_TRUE(server.wait_stderr("stopping: no new connections")) << server.err();
  // Begun before the stop, completed after it: answered.
  waiting.write_all(" and ended");
  waiting.close_write();
  EXPECT_EQ(waiting.read_to_end_string(), kPrefix + "begun and ended");
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find(" ok=1 "), std::string::npos) << server.err();
}

// Reads one line (without its '\n') a byte at a time: what a line client does between requests.
std::string line_of(Connection& c) {
  std::string line;
  char byte = 0;
  while (c.read_some(&byte, 1) == 1 && byte != '\n') line += byte;
  return line;
}

// Whether a line session is answered line after line, `count` lines ("line 0", "line 1"...).
::testing::AssertionResult answers_lines(Connection& session, int count) {
  for (int i = 0; i < count; ++i) {
    const std::string line = "line " + std::to_string(i);
    session.write_all(line + "\n");
    const std::string got = line_of(session);
    if (got != kPrefix + line) {
      return ::testing::AssertionFailure() << "'" << line << "' was answered '" << got << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(WaitingRoomProgram, LineSessionsWaitBetweenLinesWithoutAWorkerAndResume) {
  constexpr int kWorkers = 2;
  constexpr int kSessions = 10 * kWorkers;
  test::MeteredServer server(
      {"--mode", "line", "--workers", std::to_string(kWorkers), "--timeout", "20"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  std::vector<Connection> sessions;
  sessions.reserve(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    sessions.push_back(held_from("127.2.0." + std::to_string(1 + i), server.port(), ""));
    Connection& c = sessions.back();
    ASSERT_EQ(line_of(c), "connect");
    c.write_all("first " + std::to_string(i) + "\n");
    ASSERT_EQ(line_of(c), kPrefix + "first " + std::to_string(i));
  }
  // Between lines, every session waits in the room: none holds a worker.
  ASSERT_TRUE(room_holds(server.metrics_port(), kSessions));
  // Another session, talking line after line, is served meanwhile.
  Connection talker = held_from("127.2.1.1", server.port(), "");
  ASSERT_EQ(line_of(talker), "connect");
  ASSERT_TRUE(answers_lines(talker, 20));
  // A line sent in two parts, far apart, is one line.
  talker.write_all("in two ");
  std::this_thread::sleep_for(50ms);  // ok-sleep: the pause between the two parts of a line
  talker.write_all("parts\n");
  EXPECT_EQ(line_of(talker), kPrefix + "in two parts");
  // Each waiting session resumes where it was.
  for (int i = 0; i < kSessions; ++i) {
    Connection& c = sessions[static_cast<std::size_t>(i)];
    c.write_all("second " + std::to_string(i) + "\n");
    EXPECT_EQ(line_of(c), kPrefix + "second " + std::to_string(i));
  }
  // The stop ends the sessions waiting between lines at once, each closed cleanly: no reset,
  // no wait for --timeout.
  const Clock::time_point stop = Clock::now();
  server.signal(SIGTERM);
  for (Connection& c : sessions) {
    char byte = 0;
    EXPECT_EQ(c.read_some(&byte, 1), 0U) << "a clean end of stream";
  }
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_LT(Clock::now() - stop, std::chrono::seconds(5));
}

// A line client that sends line after line and reads none of its replies: it sends what the
// kernel takes, until the server has taken nothing for 300 ms (it stopped reading this client)
// or 32 MiB went out. `sent` is what went out; its last line may be cut.
Connection line_non_reader(std::uint16_t port, int i, std::string& sent) {
  Connection c = held_from("127.3.2." + std::to_string(1 + i), port, "");
  std::string lines;
  for (int n = 0; lines.size() < (std::size_t{32} << 20); ++n) {
    std::string line = "client " + std::to_string(i) + " line " + std::to_string(n) + " ";
    line.resize(99, static_cast<char>('a' + n % 26));
    lines += line + "\n";
  }
  std::size_t at = 0;
  while (at < lines.size()) {
    const std::string_view rest = std::string_view(lines).substr(at);
    const std::size_t n = c.try_write(&rest, 1);
    at += n;
    if (n > 0) continue;
    pollfd writable{c.fd(), POLLOUT, 0};
    if (::poll(&writable, 1, 300) == 0) break;
  }
  sent = lines.substr(0, at);
  return c;
}

TEST(WaitingRoomProgram, LineSessionsThatDoNotReadTheirRepliesHoldNoWorker) {
  // Before the waiting room wrote line replies, each such client held a worker in its write
  // until --timeout: two of them stopped a server of two workers.
  constexpr int kWorkers = 2;
  constexpr int kNonReaders = 2 * kWorkers;
  test::MeteredServer server({"--mode", "line", "--workers", std::to_string(kWorkers), "--timeout",
                              "20", "--request-timeout", "20"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  std::vector<Connection> clients;
  std::vector<std::string> sent(kNonReaders);
  clients.reserve(kNonReaders);
  for (int i = 0; i < kNonReaders; ++i) {
    clients.push_back(line_non_reader(server.port(), i, sent[static_cast<std::size_t>(i)]));
    // It stopped when the server stopped reading it, its replies not taken: megabytes in.
    ASSERT_GT(sent[static_cast<std::size_t>(i)].size(), std::size_t{1} << 20);
  }
  ASSERT_TRUE(room_holds(server.metrics_port(), kNonReaders));
  // Another line client is served meanwhile, line after line.
  Connection talker = held_from("127.3.2.100", server.port(), "");
  ASSERT_EQ(line_of(talker), "connect");
  ASSERT_TRUE(answers_lines(talker, 10));
  // Each client, reading at last, gets every reply whole and in order, and its session goes on:
  // the rest of its last line, then one more.
  for (int i = 0; i < kNonReaders; ++i) {
    Connection& c = clients[static_cast<std::size_t>(i)];
    const std::string& lines = sent[static_cast<std::size_t>(i)];
    const std::size_t whole = lines.rfind('\n') + 1;
    std::string expected = "connect\n";
    for (std::size_t at = 0; at < whole; at = lines.find('\n', at) + 1) {
      expected += kPrefix + lines.substr(at, lines.find('\n', at) + 1 - at);
    }
    std::string got(expected.size(), '\0');
    std::size_t have = 0;
    while (have < got.size()) {
      const std::size_t n = c.read_some(&got[have], got.size() - have);
      ASSERT_GT(n, 0U) << i << ": the end after " << have << " of " << got.size() << " bytes";
      have += n;
    }
    EXPECT_TRUE(got == expected) << i << ": the replies differ from byte "
                                 << std::mismatch(got.begin(), got.end(), expected.begin()).first -
                                        got.begin();
    const std::string cut = lines.substr(whole);
    c.write_all("ended\nlast\n");
    EXPECT_EQ(line_of(c), kPrefix + cut + "ended") << i;
    EXPECT_EQ(line_of(c), kPrefix + "last") << i;
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find(" ok=" + std::to_string(kNonReaders + 1) + " "), std::string::npos)
      << server.err();
}

// A client that sends `size` bytes, half-closes and does not read its reply (yet).
Connection non_reader(std::uint16_t port, int i, std::size_t size) {
  Connection c = held_from("127.3.0." + std::to_string(1 + i), port, "");
  c.write_all(std::string(size, static_cast<char>('a' + i % 26)));
  c.close_write();
  return c;
}

TEST(WaitingRoomProgram, RepliesNotReadWaitInTheRoomWithinTheBudgetWhileOthersAreServed) {
  constexpr int kWorkers = 4;
  constexpr int kNonReaders = 10 * kWorkers;
  constexpr std::size_t kSize = std::size_t{8} << 20;  // more than the kernel's buffers hold
  test::MeteredServer server({"--workers", std::to_string(kWorkers), "--timeout", "20"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  std::vector<Connection> readers;
  readers.reserve(kNonReaders);
  for (int i = 0; i < kNonReaders; ++i) readers.push_back(non_reader(server.port(), i, kSize));
  ASSERT_TRUE(room_holds(server.metrics_port(), kNonReaders));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(answered_within(server.port(), "legit " + std::to_string(i), test::kPatience));
  }
  EXPECT_LE(gauge(scrape(server.metrics_port()), "sockecho_workers"), kWorkers);
  // Each reply, read at last, is whole.
  for (int i = 0; i < kNonReaders; ++i) {
    const std::string reply = readers[static_cast<std::size_t>(i)].read_to_end_string();
    EXPECT_EQ(reply.size(), kPrefix.size() + kSize) << i;
    EXPECT_EQ(reply.substr(0, kPrefix.size()), kPrefix) << i;
    EXPECT_EQ(reply.find_first_not_of(static_cast<char>('a' + i % 26), kPrefix.size()),
              std::string::npos)
        << i;
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find(" ok=" + std::to_string(kNonReaders + 20) + " "), std::string::npos)
      << server.err();
}

TEST(WaitingRoomProgram, RepliesNotReadPastTheBudgetAreWrittenByAWorkerAndCutAtTheTimeout) {
  // Replies of 8 MiB (a program's output) and a budget of 1 MiB: what the kernel does not take
  // at once cannot wait in the room, so each worker writes its reply as before the room, and
  // a client that does not read is cut at the idle limit; then the workers serve again.
  test::ServerProcess server({"--workers", "2", "--timeout", "0.5", "--max-total-bytes", "1M",
                              "--exec", "head", "-c", "8388608", "/dev/zero"});
  std::vector<Connection> readers;
  readers.reserve(2);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < 2; ++i) readers.push_back(non_reader(server.port(), i, 1));
  for (int i = 0; i < 2; ++i) {
    const std::optional<std::string> line = server.wait_stderr(" outcome=");
    ASSERT_TRUE(line) << server.err();
    EXPECT_NE(line->find(" outcome=timeout"), std::string::npos) << *line;
  }
  EXPECT_LT(Clock::now() - start, 500ms + 500ms + kSlack + std::chrono::seconds(1));
  RequestOptions patient;
  patient.timeout = test::kPatience;
  EXPECT_EQ(request("127.0.0.1", server.port(), "after", patient).size(), 8U << 20);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(WaitingRoomProgram, AReplyCutAtTheTimeoutLeavesNoByteOfItForTheNextClient) {
  // Each worker writes a large reply to a client that never reads and is cut at the idle limit
  // with most of it unwritten. Those bytes are that client's: the next clients, whichever worker
  // answers them, get their own small replies and nothing more.
  test::ServerProcess server(
      {"--workers", "2", "--timeout", "0.3", "--max-total-bytes", "1M", "--exec", "sh", "-c",
       "if [ \"$(cat)\" = big ]; then head -c 8388608 /dev/zero; else echo small; fi"});
  std::vector<Connection> readers;
  readers.reserve(2);
  for (int i = 0; i < 2; ++i) {
    readers.push_back(held_from("127.3.1." + std::to_string(1 + i), server.port(), "big"));
    readers.back().close_write();
  }
  for (int i = 0; i < 2; ++i) {
    const std::optional<std::string> line = server.wait_stderr(" outcome=");
    ASSERT_TRUE(line) << server.err();
    EXPECT_NE(line->find(" outcome=timeout"), std::string::npos) << *line;
  }
  RequestOptions patient;
  patient.timeout = test::kPatience;
  for (int i = 0; i < 10; ++i) {
    const std::string reply = request("127.0.0.1", server.port(), "x", patient);
    EXPECT_EQ(reply.substr(0, 6), "small\n") << i;
    EXPECT_EQ(reply.size(), 6U) << i << ": bytes of the cut reply followed";
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(WaitingRoomProgram, MaxConnectionsOutOfRangeIsAUsageError) {
  for (const char* bad : {"0", "-1", "1000001", "many"}) {
    const test::RunResult r =
        test::run({test::server_program(), "--port", "0", "--max-connections", bad});
    EXPECT_EQ(r.status, 2) << bad;
    EXPECT_NE(r.err.find("--max-connections"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace sockecho
