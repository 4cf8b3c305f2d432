// Fault injection on loopback: broken and hostile clients, a connection burst far beyond the
// backlog, requests around --max-bytes, signals in the middle of accept, read and write, and
// ten thousand connections in a row, against the real sockecho-server (and, where a signal
// handler must be installed, the library's Server in this process). Every test ends the same
// way: the daemon's descriptors are back where they started and it still answers a normal
// request correctly. daemon_test.cpp and daemon_programs_test.cpp cover the neighbouring cases.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/error.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::ServerProcess;
using test::socket_count;

using test::kPrefix;
constexpr std::string_view kNormal = "a normal request";

// ASan keeps freed memory in quarantine and TSan shadows it, so resident memory is no measure
// of leaks there; LeakSanitizer looks for leaks in those builds instead.
using test::kSanitized;
// UBSan's vptr check needs descriptors of its own (it probes memory through a pipe); the
// sanitized builds pair UndefinedBehaviorSanitizer with AddressSanitizer.
constexpr bool kUndefinedSanitized = test::kAddressSanitized;

// The reply a normal request gets in each mode.
std::string normal_reply(bool line_mode) {
  return line_mode ? "connect\n" + kPrefix + std::string(kNormal) + "\n"
                   : kPrefix + std::string(kNormal);
}

// The daemon's arguments for a fault tried in both modes: two workers, line mode when asked, and
// `more`.
std::vector<std::string> two_workers(bool line_mode, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--workers", "2"};
  if (line_mode) args.insert(args.end(), {"--mode", "line"});
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// The daemon answers a normal request correctly.
void expect_answers(std::uint16_t port, bool line_mode = false) {
  RequestOptions options;
  options.timeout = test::kPatience;
  try {
    EXPECT_EQ(request("127.0.0.1", port, kNormal, options), normal_reply(line_mode));
  } catch (const std::system_error& e) {
    ADD_FAILURE() << "the daemon no longer answers: " << e.what();
  }
}

// Reads the daemon's log until `count` more connection lines have come; returns their outcomes,
// sorted (workers finish, and so log, in any order).
std::vector<std::string> outcomes(ServerProcess& server, std::size_t count) {
  std::vector<std::string> out;
  while (out.size() < count) {
    const std::optional<std::string> line = server.wait_stderr(" conn peer=");
    if (!line) {
      ADD_FAILURE() << "only " << out.size() << " of " << count << " connection lines; log:\n"
                    << server.err();
      break;
    }
    const std::size_t at = line->find(" outcome=");
    const std::size_t start = at == std::string::npos ? line->size() : at + 9;
    out.push_back(line->substr(start, line->find(' ', start) - start));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Closing this connection sends a reset (RST) instead of an orderly FIN.
void reset_on_close(const Connection& c) {
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
}

// Reads exactly n bytes (fewer only at end of stream).
std::string read_exactly(Connection& c, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const std::size_t r = c.read_some(out.data() + got, n - got);
    if (r == 0) break;
    got += r;
  }
  out.resize(got);
  return out;
}

// `count` lines of `width` bytes each, '\n' included.
std::string lines(std::size_t count, std::size_t width) {
  std::string out;
  out.reserve(count * width);
  for (std::size_t i = 0; i < count; ++i) {
    out.append(width - 1, static_cast<char>('a' + i % 26));
    out += '\n';
  }
  return out;
}

// --- Clients that reset, go silent, or never read ---

TEST(FaultProgram, ClientsResettingMidRequestInBothModes) {
  for (const bool line_mode : {false, true}) {
    SCOPED_TRACE(line_mode ? "line mode" : "echo mode");
    ServerProcess server(two_workers(line_mode));
    const int fds = socket_count(server.pid());
    constexpr int kClients = 10;
    for (int i = 0; i < kClients; ++i) {
      Connection c = connect("127.0.0.1", server.port());
      // Echo mode: a request with no end; line mode: a line with no end (under --max-bytes), so
      // the server is reading, never writing, when the reset comes.
      const std::size_t size = std::size_t{256} * 1024 + static_cast<std::size_t>(i);
      c.write_all(line_mode ? std::string(size, 'x') : test::pattern(size));
      reset_on_close(c);
    }
    for (const std::string& outcome : outcomes(server, kClients)) EXPECT_EQ(outcome, "reset");
    EXPECT_EQ(socket_count(server.pid()), fds);
    expect_answers(server.port(), line_mode);
  }
}

TEST(FaultProgram, ClientsResettingMidReplyInBothModes) {
  for (const bool line_mode : {false, true}) {
    SCOPED_TRACE(line_mode ? "line mode" : "echo mode");
    ServerProcess server(two_workers(line_mode));
    const int fds = socket_count(server.pid());
    // Replies far larger than the socket buffers, so the server is mid-write when the reset
    // comes: 8 MiB echoed at once, or 100,000 lines answered in batches.
    const std::string request = line_mode ? lines(100000, 64) : test::pattern(8 << 20);
    constexpr int kClients = 4;
    constexpr std::size_t kFlowing = std::size_t{64} * 1024;
    for (int i = 0; i < kClients; ++i) {
      Connection c = connect("127.0.0.1", server.port());
      std::thread writer([&] {
        try {
          c.write_all(request);
          c.close_write();
        } catch (const std::system_error&) {  // the reset below may come first
        }
      });
      EXPECT_EQ(read_exactly(c, kFlowing).size(), kFlowing);  // the reply is flowing
      reset_on_close(c);
      // Wakes the writer if it is still blocked (line mode: the server, blocked writing to us,
      // has stopped reading); the close then resets the connection.
      ::shutdown(c.fd(), SHUT_RDWR);
      writer.join();
      c.close();
    }
    for (const std::string& outcome : outcomes(server, kClients)) EXPECT_EQ(outcome, "reset");
    EXPECT_EQ(socket_count(server.pid()), fds);
    expect_answers(server.port(), line_mode);
  }
}

TEST(FaultProgram, ClientsThatConnectAndLeaveAtOnce) {
  ServerProcess server({"--workers", "2"});
  const int fds = socket_count(server.pid());
  // A reset before a byte is sent, then an orderly close before a byte is sent (an empty
  // request: its reply, the prefix alone, goes to a peer that has left).
  for (int i = 0; i < 10; ++i) {
    Connection c = connect("127.0.0.1", server.port());
    reset_on_close(c);
  }
  for (const std::string& outcome : outcomes(server, 10)) EXPECT_EQ(outcome, "reset");
  for (int i = 0; i < 10; ++i) connect("127.0.0.1", server.port()).close();
  for (const std::string& outcome : outcomes(server, 10)) {
    EXPECT_TRUE(outcome == "ok" || outcome == "reset") << outcome;
  }
  EXPECT_EQ(socket_count(server.pid()), fds);
  expect_answers(server.port());
}

TEST(FaultProgram, SilentClientsOnEveryWorkerAndInTheBacklogAreDropped) {
  for (const bool line_mode : {false, true}) {
    SCOPED_TRACE(line_mode ? "line mode" : "echo mode");
    ServerProcess server(two_workers(line_mode, {"--timeout", "0.3"}));
    const int fds = socket_count(server.pid());
    // Twice as many silent clients as workers: two hold the workers, two wait in the backlog.
    std::vector<Connection> silent;
    silent.reserve(4);
    for (int i = 0; i < 4; ++i) silent.push_back(connect("127.0.0.1", server.port()));
    for (const std::string& outcome : outcomes(server, 4)) EXPECT_EQ(outcome, "timeout");
    for (Connection& c : silent) {
      // Reset without a reply; line mode had sent its greeting.
      EXPECT_EQ(test::read_until_reset(c), line_mode ? "connect\n" : "");
    }
    EXPECT_EQ(socket_count(server.pid()), fds);
    expect_answers(server.port(), line_mode);
  }
}

TEST(FaultProgram, HalfClosedClientsThatNeverReadAreDropped) {
  for (const bool line_mode : {false, true}) {
    SCOPED_TRACE(line_mode ? "line mode" : "echo mode");
    ServerProcess server(two_workers(line_mode, {"--timeout", "0.3"}));
    const int fds = socket_count(server.pid());
    // Three clients, two workers. Each sends a request whose reply (16 MiB either way) is more
    // than loopback's socket buffers take in, half-closes, and never reads: the server's write
    // stalls until the timeout.
    const std::string request = line_mode ? lines(400000, 32) : test::pattern(16 << 20);
    std::vector<Connection> lazy;
    std::vector<std::thread> writers;
    lazy.reserve(3);
    writers.reserve(3);
    for (int i = 0; i < 3; ++i) lazy.push_back(connect("127.0.0.1", server.port()));
    for (Connection& c : lazy) {
      writers.emplace_back([&c, &request] {
        try {
          c.write_all(request);
          c.close_write();
        } catch (const std::system_error&) {  // line mode: the server may give up first
        }
      });
    }
    for (std::thread& w : writers) w.join();
    for (const std::string& outcome : outcomes(server, 3)) EXPECT_EQ(outcome, "timeout");
    EXPECT_EQ(socket_count(server.pid()), fds);
    expect_answers(server.port(), line_mode);
  }
}

// --- Requests around --max-bytes ---

TEST(FaultProgram, EchoRequestsAroundMaxBytes) {
  ServerProcess server({"--max-bytes", "4K"});
  const int fds = socket_count(server.pid());
  const std::string below(4095, 'b');
  const std::string at(4096, 'a');
  EXPECT_EQ(request("127.0.0.1", server.port(), below), kPrefix + below);
  EXPECT_EQ(request("127.0.0.1", server.port(), at), kPrefix + at);
  try {
    EXPECT_EQ(request("127.0.0.1", server.port(), std::string(4097, 'o')), "")
        << "one byte over the limit must not be echoed";
  } catch (const std::system_error& e) {  // closed with the byte unread: a reset
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
  EXPECT_EQ(outcomes(server, 3), (std::vector<std::string>{"ok", "ok", "too_large"}));
  EXPECT_EQ(socket_count(server.pid()), fds);
  expect_answers(server.port());
}

TEST(FaultProgram, LinesAroundMaxBytes) {
  ServerProcess server({"--mode", "line", "--max-bytes", "4K"});
  const int fds = socket_count(server.pid());
  const std::string below(4095, 'b');
  const std::string at(4096, 'a');
  EXPECT_EQ(request("127.0.0.1", server.port(), below + "\n" + at + "\n"),
            "connect\n" + kPrefix + below + "\n" + kPrefix + at + "\n");
  // One byte over: the lines before it are answered, then the connection is closed.
  Connection c = connect("127.0.0.1", server.port());
  try {
    c.write_all("first\n" + std::string(4097, 'o') + "\nnever answered\n");
    c.close_write();  // the server's reset may already have arrived
    EXPECT_EQ(c.read_to_end_string(), "connect\n" + kPrefix + "first\n");
  } catch (const std::system_error& e) {
    EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe)
        << e.what();
  }
  EXPECT_EQ(outcomes(server, 2), (std::vector<std::string>{"ok", "too_large"}));
  EXPECT_EQ(socket_count(server.pid()), fds);
  expect_answers(server.port(), true);
}

// --- Numbers: a burst, and a long run ---

// Lets this process open `wanted` descriptors, raising the soft limit toward the hard one.
void allow_descriptors(rlim_t wanted) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_GE(limit.rlim_cur, wanted) << "the hard descriptor limit is too low for this test";
}

struct BurstResult {
  int answered = 0;  // the right reply, whole
  int wrong = 0;     // a reply that is not this connection's
  // Refused or reset by the kernel: with the accept queue full, the SYN or the handshake's last
  // ACK is dropped, and SYN cookies that no longer validate when the client retries draw a
  // reset. The daemon never sees these.
  int failed = 0;
  int unfinished = 0;
};

// Opens `count` connections at once, each sending its own small request and half-closing, and
// collects the replies until `budget` runs out; then closes every one.
BurstResult burst(std::uint16_t port, int count, std::chrono::milliseconds budget) {
  struct Client {
    Fd fd;
    std::string message;
    std::string reply;
    bool sent = false;
    bool done = false;
  };
  BurstResult result;
  std::vector<Client> clients(static_cast<std::size_t>(count));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < count; ++i) {
    Client& c = clients[static_cast<std::size_t>(i)];
    c.message = "burst " + std::to_string(i);
    c.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!c.fd) throw os_error(errno, "socket");
    // Closing resets: a connection still unanswered when the budget runs out must not linger
    // in the kernel, retrying its handshake or request into the daemon after the burst.
    const linger abort{1, 0};
    if (::setsockopt(c.fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort) != 0) {
      throw os_error(errno, "setsockopt SO_LINGER");
    }
    if (::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 &&
        errno != EINPROGRESS) {
      c.done = true;
      ++result.failed;
    }
  }
  const auto deadline = Clock::now() + budget;
  std::vector<pollfd> waiting;
  std::vector<Client*> owners;
  std::vector<char> chunk(65536);
  for (;;) {
    waiting.clear();
    owners.clear();
    for (Client& c : clients) {
      if (c.done) continue;
      waiting.push_back({c.fd.get(), static_cast<short>(c.sent ? POLLIN : POLLOUT), 0});
      owners.push_back(&c);
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (waiting.empty() || left.count() <= 0) break;
    const int ready = ::poll(waiting.data(), waiting.size(), static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) throw os_error(errno, "poll");
    for (std::size_t i = 0; i < waiting.size(); ++i) {
      if (waiting[i].revents == 0) continue;
      Client& c = *owners[i];
      if (!c.sent) {
        int error = 0;
        socklen_t len = sizeof error;
        ::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &error, &len);
        if (error != 0 || ::send(c.fd.get(), c.message.data(), c.message.size(), MSG_NOSIGNAL) !=
                              static_cast<ssize_t>(c.message.size())) {
          c.done = true;
          ++result.failed;
          continue;
        }
        ::shutdown(c.fd.get(), SHUT_WR);
        c.sent = true;
        continue;
      }
      const ssize_t n = ::recv(c.fd.get(), chunk.data(), chunk.size(), 0);
      if (n > 0) {
        c.reply.append(chunk.data(), static_cast<std::size_t>(n));
      } else if (n == 0) {
        c.done = true;
        if (c.reply == kPrefix + c.message) {
          ++result.answered;
        } else {
          ++result.wrong;
        }
      } else if (errno != EAGAIN && errno != EINTR) {
        c.done = true;
        ++result.failed;
      }
    }
  }
  for (const Client& c : clients) result.unfinished += c.done ? 0 : 1;
  return result;  // every descriptor closes here
}

// The number after " key=" in the daemon's stop line ("stop accepted=N ok=N ..."); -1 if none.
long stop_count(const std::string& log, const std::string& key) {
  const std::size_t stop = log.find(" stop accepted=");
  if (stop == std::string::npos) return -1;
  const std::size_t at = log.find(" " + key + "=", stop);
  if (at == std::string::npos) return -1;
  return std::stol(log.substr(at + key.size() + 2));
}

TEST(FaultProgram, BurstFarBeyondTheBacklogAndTheWorkers) {
  constexpr int kConnections = 2000;
  allow_descriptors(kConnections + 256);
  // Not --quiet: the stop line counts what the daemon answered. A line per connection, about
  // 300 KB in all, fits the log's 1 MiB queue while this test does not read it.
  ServerProcess server({"--workers", "2", "--backlog", "16", "--timeout", "2"});
  const int fds = socket_count(server.pid());
  const BurstResult r = burst(server.port(), kConnections, 10s);
  RecordProperty("answered", r.answered);
  RecordProperty("failed", r.failed);
  RecordProperty("unfinished", r.unfinished);
  EXPECT_EQ(r.wrong, 0) << "a reply reached the wrong connection or was cut short";
  EXPECT_EQ(r.answered + r.failed + r.unfinished, kConnections);
  // Connections the burst left in the backlog are still accepted and served (to nobody), each
  // within --timeout (2 s); a request queues behind them. Keep asking until the daemon holds no
  // socket but its listener, for at most a few timeouts.
  // (Spelled out: cppcheck 2.10 fails on a chrono literal in this expression.)
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  int fds_after = -1;
  long asked = 0;
  while (fds_after != fds && Clock::now() < deadline) {
    expect_answers(server.port());
    ++asked;
    // The daemon closes its socket a moment after the client has read the reply to its end:
    // a busy machine can show that one socket still open, so give it a moment each time.
    const auto settled = Clock::now() + std::chrono::milliseconds(500);
    while ((fds_after = socket_count(server.pid())) != fds && Clock::now() < settled) {
      std::this_thread::yield();
    }
  }
  EXPECT_EQ(fds_after, fds);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  // Every connection the daemon answered whole is one a client counted (or a request since):
  // none answered twice or into the wrong socket, none answered and lost. A connection the
  // burst gave up on may still have been answered after it, hence >= when some were left.
  const long ok = stop_count(server.err(), "ok");
  RecordProperty("daemon_ok", static_cast<int>(ok));
  if (r.unfinished == 0) {
    EXPECT_EQ(ok, r.answered + asked) << server.err().substr(0, 2000);
  } else {
    EXPECT_GE(ok, r.answered + asked) << server.err().substr(0, 2000);
  }
  EXPECT_EQ(server.err().find("pausing accept"), std::string::npos) << server.err();
}

TEST(FaultProgram, TenThousandSequentialConnectionsLeaveDescriptorsAndMemoryFlat) {
  ServerProcess server({"--quiet"});
  // Warm up first: every worker has served and holds its buffers, malloc has its arenas.
  for (int i = 0; i < 500; ++i) {
    ASSERT_EQ(request("127.0.0.1", server.port(), "warm"), kPrefix + "warm");
  }
  const int fds_before = socket_count(server.pid());
  EXPECT_EQ(fds_before, 1) << "an idle daemon holds its listening socket alone";
  const long rss_before = test::rss_kib(server.pid());
  constexpr int kConnections = 10000;
  int answered = 0;
  for (int i = 0; i < kConnections; ++i) {
    const std::string message = "request " + std::to_string(i);
    answered += request("127.0.0.1", server.port(), message) == kPrefix + message ? 1 : 0;
  }
  EXPECT_EQ(answered, kConnections);
  const int fds_after = socket_count(server.pid());
  const long rss_after = test::rss_kib(server.pid());
  RecordProperty("rss_before_kib", static_cast<int>(rss_before));
  RecordProperty("rss_after_kib", static_cast<int>(rss_after));
  EXPECT_EQ(fds_after, fds_before);
  if (!kSanitized) {
    EXPECT_LT(rss_after - rss_before, 1024) << "RSS " << rss_before << " -> " << rss_after
                                            << " KiB over " << kConnections << " connections";
  }
  expect_answers(server.port());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

// --- Out of descriptors ---

// The lowest descriptor number that does not appear in /proc/PID/fd: free, or reserved by a
// thread blocked in accept() (Linux takes the number before it blocks, and shows it only once
// a connection arrives).
int lowest_unlisted_descriptor(pid_t pid) {
  std::vector<int> listed;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    listed.push_back(std::stoi(entry.path().filename().string()));
  }
  std::sort(listed.begin(), listed.end());
  int lowest = 0;
  for (const int fd : listed) {
    if (fd != lowest) break;
    ++lowest;
  }
  return lowest;
}

// How many of a process's threads are blocked in accept4(), from /proc/PID/task/*/syscall.
int threads_in_accept(pid_t pid) {
  int count = 0;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream syscall(task.path() / "syscall");
    long number = -1;
    if (syscall >> number && number == SYS_accept4) ++count;
  }
  return count;
}

// Sets a running process's soft descriptor limit; returns the limits it had.
rlimit set_descriptor_limit(pid_t pid, rlim_t soft) {
  rlimit old{};
  if (::prlimit(pid, RLIMIT_NOFILE, nullptr, &old) != 0) throw os_error(errno, "prlimit");
  rlimit wanted = old;
  wanted.rlim_cur = soft;
  if (::prlimit(pid, RLIMIT_NOFILE, &wanted, nullptr) != 0) throw os_error(errno, "prlimit");
  return old;
}

// The soft descriptor limit of a running process.
rlim_t descriptor_limit(pid_t pid) {
  rlimit now{};
  if (::prlimit(pid, RLIMIT_NOFILE, nullptr, &now) != 0) throw os_error(errno, "prlimit");
  return now.rlim_cur;
}

// util-linux's prlimit(1) runs a program with other limits; it is on every Debian system.
constexpr const char* kPrlimit = "/usr/bin/prlimit";

// Takes a two-worker daemon's descriptors away, and returns the limits it had. Each worker waiting
// in accept() already holds the number its next connection will get. Once both wait there, take
// away every number not in use: a worker that has served one connection then finds accept()
// failing with EMFILE, as if clients held all the daemon's descriptors; two requests get both
// there.
rlimit exhaust_descriptors(const ServerProcess& server) {
  {
    // Workers start on demand: a held connection makes the second one start, which answers a
    // request meanwhile; once the held one is answered too, both wait in accept().
    Connection held = connect("127.0.0.1", server.port(), test::kPatience);
    held.set_timeout(test::kPatience);
    expect_answers(server.port());
    held.write_all(kNormal);
    held.close_write();
    EXPECT_EQ(held.read_to_end_string(), normal_reply(false));
  }
  const auto deadline = Clock::now() + test::kPatience;
  while (threads_in_accept(server.pid()) < 2 && Clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(threads_in_accept(server.pid()), 2);
  const rlimit old = set_descriptor_limit(
      server.pid(), static_cast<rlim_t>(lowest_unlisted_descriptor(server.pid())));
  expect_answers(server.port());
  expect_answers(server.port());
  return old;
}

TEST(FaultProgram, OutOfDescriptorsPausesAcceptAndRecovers) {
  if (kUndefinedSanitized) {
    GTEST_SKIP() << "UBSan's vptr check probes memory through a pipe of its own, so with no "
                    "descriptor left it is the sanitizer that fails, not the daemon";
  }
  ServerProcess server({"--workers", "2", "--timeout", "10"});
  const rlimit old = exhaust_descriptors(server);
  const std::optional<std::string> paused = server.wait_stderr("; pausing accept");
  ASSERT_TRUE(paused) << server.err();
  EXPECT_NE(paused->find("accept 127.0.0.1:"), std::string::npos) << *paused;
  EXPECT_NE(paused->find("Too many open files"), std::string::npos) << *paused;

  // With both workers out of descriptors, a new connection waits in the backlog, unanswered...
  Connection waiting = connect("127.0.0.1", server.port());
  waiting.write_all("waited");
  waiting.close_write();
  waiting.set_timeout(300ms);
  char byte = 0;
  try {
    (void)waiting.read_some(&byte, 1);
    ADD_FAILURE() << "answered while the daemon had no descriptor to accept with";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
  }
  // ...and is served once descriptors are back, within the pause of 100 ms.
  set_descriptor_limit(server.pid(), old.rlim_cur);
  waiting.set_timeout(test::kPatience);
  EXPECT_EQ(waiting.read_to_end_string(), kPrefix + "waited");
  EXPECT_EQ(socket_count(server.pid()), 1);
  expect_answers(server.port());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(FaultProgram, OutOfDescriptorsTheLogSaysSoOnceASecondWithACount) {
  if (kUndefinedSanitized) {
    GTEST_SKIP() << "UBSan's vptr check probes memory through a pipe of its own (see above)";
  }
  ServerProcess server({"--workers", "2", "--timeout", "10"});
  const rlimit old = exhaust_descriptors(server);
  ASSERT_TRUE(server.wait_stderr("; pausing accept")) << server.err();
  // Both workers pause 10 times a second each: 50 pauses in the next 2.5 s, and two or three
  // lines saying how many (a slow machine may get to the third only after the window).
  const auto window_end = Clock::now() + std::chrono::milliseconds(2500);  // for cppcheck 2.10
  std::vector<std::string> lines;
  while (Clock::now() < window_end) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(window_end - Clock::now());
    const std::optional<std::string> line = server.stderr_line(std::max(left, 1ms));
    if (line && line->find("; pausing accept") != std::string::npos) lines.push_back(*line);
  }
  set_descriptor_limit(server.pid(), old.rlim_cur);
  EXPECT_GE(lines.size(), 2U) << server.err();
  EXPECT_LE(lines.size(), 3U) << server.err();
  for (const std::string& line : lines) {
    // "... Too many open files; pausing accept (20 times in the last 1.0 s)"
    const std::size_t count_at = line.find("; pausing accept (");
    ASSERT_NE(count_at, std::string::npos) << line;
    const int count =
        std::stoi(line.substr(count_at + std::string_view("; pausing accept (").size()));
    EXPECT_GE(count, 5) << line;
    EXPECT_LE(count, 30) << line;
    EXPECT_NE(line.find(" times in the last 1."), std::string::npos) << line;
  }
  expect_answers(server.port());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(FaultProgram, TheDaemonRaisesItsDescriptorLimitForItsWorkers) {
  // Started with a soft limit of 32, 80 workers and as many connections at once: it raises the
  // soft limit (to 80 + 16) so every worker can hold a connection at once.
  test::Child child({kPrlimit, "--nofile=32:", test::server_program(), "--port", "0", "--workers",
                     "80", "--max-connections", "80", "--verbose"});
  const std::optional<std::string> ready = child.stdout_line();
  ASSERT_TRUE(ready) << child.err();
  const std::uint16_t port = test::port_of(*ready);
  EXPECT_EQ(descriptor_limit(child.pid()), rlim_t{96});
  std::vector<Connection> held;
  held.reserve(80);
  for (int i = 0; i < 80; ++i) {
    held.push_back(connect("127.0.0.1", port));
    held.back().write_all("held " + std::to_string(i));
  }
  for (int i = 0; i < 80; ++i) {
    ASSERT_TRUE(child.wait_stderr(" open peer=")) << "only " << i << " of 80 taken at once";
  }
  EXPECT_EQ(socket_count(child.pid()), 81);
  for (std::size_t i = 0; i < held.size(); ++i) {
    held[i].close_write();
    EXPECT_EQ(held[i].read_to_end_string(), kPrefix + "held " + std::to_string(i));
  }
  expect_answers(port);
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(child.err().find("pausing accept"), std::string::npos) << child.err();
}

TEST(FaultProgram, MoreWorkersThanTheHardDescriptorLimitAllowsIsRefusedAtStart) {
  const test::RunResult r = test::run(
      {kPrlimit, "--nofile=64:64", test::server_program(), "--port", "0", "--workers", "80"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            "sockecho-server: --workers 80 needs 96 open files, but the hard limit is 64 "
            "(ulimit -Hn); lower --workers or raise the limit\n");
}

// --- Signals ---

// Waits until the child is stopped (SIGSTOP) or continued (SIGCONT): an event, not a guess.
void wait_for(pid_t pid, int which) {
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, which), 0);
}

void stop_and_continue(const ServerProcess& server) {
  server.signal(SIGSTOP);
  wait_for(server.pid(), WSTOPPED);
  server.signal(SIGCONT);
  wait_for(server.pid(), WCONTINUED);
}

TEST(FaultSignals, StopAndContinueDuringAcceptReadAndWrite) {
  // With --timeout set, Linux makes a blocked accept, recv or send fail with EINTR when the
  // process is stopped and continued, even with no signal handler: it must be retried.
  ServerProcess server({"--workers", "2", "--timeout", "10", "--verbose"});
  // During accept: both workers idle.
  stop_and_continue(server);
  expect_answers(server.port());
  EXPECT_EQ(outcomes(server, 1), std::vector<std::string>{"ok"});

  // During read: the request has begun and the server waits for the rest.
  const std::string payload = test::pattern(16 << 20);
  Connection reading = connect("127.0.0.1", server.port());
  reading.write_all(std::string_view(payload).substr(0, 1000));
  ASSERT_TRUE(server.wait_stderr("open peer="));
  for (int i = 0; i < 3; ++i) stop_and_continue(server);
  std::thread writer([&] {
    reading.write_all(std::string_view(payload).substr(1000));
    reading.close_write();
  });
  // During write: 16 MiB do not fit in the socket buffers, so the server is still writing
  // after the first bytes are read.
  EXPECT_EQ(read_exactly(reading, 1000), (kPrefix + payload).substr(0, 1000));
  for (int i = 0; i < 3; ++i) stop_and_continue(server);
  EXPECT_TRUE(reading.read_to_end_string() == (kPrefix + payload).substr(1000))
      << "the reply was not the request, whole";
  writer.join();

  EXPECT_EQ(outcomes(server, 1), std::vector<std::string>{"ok"});
  expect_answers(server.port());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(FaultSignals, IgnoredSignalsDuringTransfersChangeNothing) {
  // Signals a daemon meets without asking: a window resize, a child's end, urgent data, a
  // continue, and a SIGPIPE sent by hand. None may end it or disturb a transfer.
  ServerProcess server({"--workers", "2", "--quiet"});
  const std::string payload = test::pattern(8 << 20);
  std::atomic<bool> done{false};
  std::string reply;
  std::thread client([&] {
    try {
      reply = request("127.0.0.1", server.port(), payload);
    } catch (const std::system_error& e) {
      ADD_FAILURE() << e.what();
    }
    done = true;
  });
  int sent = 0;
  const auto deadline = Clock::now() + test::kPatience;
  while (!done && Clock::now() < deadline) {
    for (const int s : {SIGWINCH, SIGCHLD, SIGURG, SIGCONT, SIGPIPE}) server.signal(s);
    ++sent;
    std::this_thread::yield();
  }
  client.join();
  EXPECT_GT(sent, 0);
  EXPECT_TRUE(reply == kPrefix + payload) << "the reply was not the request, whole";
  expect_answers(server.port());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(FaultSignals, SighupStopsGracefullyLikeSigterm) {
  ServerProcess server({"--verbose"});
  Connection in_flight = connect("127.0.0.1", server.port());
  in_flight.write_all("in flight");
  ASSERT_TRUE(server.wait_stderr("open peer="));
  server.signal(SIGHUP);
  ASSERT_TRUE(server.wait_stderr("stopping: no new connections; in flight=1")) << server.err();
  in_flight.close_write();
  EXPECT_EQ(in_flight.read_to_end_string(), kPrefix + "in flight");
  EXPECT_EQ(server.wait(), 0) << server.err();
}

// In this process: a handler installed without SA_RESTART, so every signal that lands on a
// thread blocked in accept(), recv(), send() or poll() makes that call fail with EINTR.
std::atomic<int> g_signals_handled{0};

extern "C" void count_signal(int /*signal*/) {
  g_signals_handled.fetch_add(1, std::memory_order_relaxed);
}

// Installs count_signal for a signal, and puts back the old action when destroyed (once the
// threads it was aimed at are gone, so none can still have one pending).
class InterruptingHandler {
 public:
  explicit InterruptingHandler(int signal) : signal_(signal) {
    struct sigaction action {};
    action.sa_handler = count_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: interrupted calls fail with EINTR
    if (::sigaction(signal_, &action, &old_) != 0) throw os_error(errno, "sigaction");
  }
  InterruptingHandler(const InterruptingHandler&) = delete;
  InterruptingHandler& operator=(const InterruptingHandler&) = delete;
  InterruptingHandler(InterruptingHandler&&) = delete;
  InterruptingHandler& operator=(InterruptingHandler&&) = delete;
  ~InterruptingHandler() { ::sigaction(signal_, &old_, nullptr); }

 private:
  int signal_;
  struct sigaction old_ {};
};

std::vector<pid_t> thread_ids() {
  std::vector<pid_t> ids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    ids.push_back(static_cast<pid_t>(std::stol(entry.path().filename().string())));
  }
  return ids;
}

TEST(FaultSignals, EintrIsRetriedByTheServerAndTheClientInEveryCall) {
  const InterruptingHandler handler(SIGUSR1);
  const std::vector<pid_t> spared = thread_ids();  // this thread, and any the runtime keeps
  const int handled_before = g_signals_handled.load();
  {
    ServerOptions options;
    options.workers = 4;  // three busy, at least one always waiting in accept()
    options.timeout = 20s;
    test::ServerThread echo(options);
    test::ServerThread line(options,
                            line_protocol(prefix_handler(std::string(kServerDefaultPrefix))));

    std::atomic<int> clients_left{3};
    std::atomic<int> correct{0};
    std::vector<std::thread> clients;
    clients.reserve(3);
    for (int c = 0; c < 2; ++c) {
      clients.emplace_back([&, c] {
        for (int i = 0; i < 4; ++i) {
          const std::string message =
              test::pattern((std::size_t{2} << 20) + static_cast<std::size_t>(c * 7 + i));
          try {
            if (request("127.0.0.1", echo.port(), message) == kPrefix + message) ++correct;
          } catch (const std::system_error& e) {
            ADD_FAILURE() << e.what();
          }
        }
        --clients_left;
      });
    }
    clients.emplace_back([&] {
      // Line mode answers while the request is still coming, so one thread writes and another
      // reads (both signalled too).
      const std::string input = lines(50000, 40);
      std::string expected = "connect\n";
      for (std::size_t at = 0; at < input.size(); at += 40) {
        expected += kPrefix + input.substr(at, 40);
      }
      try {
        Connection c = connect("127.0.0.1", line.port());
        std::thread writer([&] {
          try {
            c.write_all(input);
            c.close_write();
          } catch (const std::system_error& e) {
            ADD_FAILURE() << e.what();
          }
        });
        const std::string got = c.read_to_end_string();
        writer.join();
        if (got == expected) correct += 4;
      } catch (const std::system_error& e) {
        ADD_FAILURE() << e.what();
      }
      --clients_left;
    });

    // Signal every thread started since the test began (server workers and clients) over and
    // over until the clients are done.
    const auto self = static_cast<pid_t>(::syscall(SYS_gettid));
    const auto deadline = Clock::now() + test::kPatience;
    while (clients_left > 0 && Clock::now() < deadline) {
      for (const pid_t id : thread_ids()) {
        if (id == self || std::find(spared.begin(), spared.end(), id) != spared.end()) continue;
        ::syscall(SYS_tgkill, ::getpid(), id, SIGUSR1);
      }
      std::this_thread::yield();
    }
    for (std::thread& t : clients) t.join();
    EXPECT_EQ(correct.load(), 12);
    EXPECT_EQ(
        echo.server().stats().count(Outcome::error) + line.server().stats().count(Outcome::error),
        0U);
    // Still answering, with signals still arriving.
    EXPECT_EQ(request("127.0.0.1", echo.port(), kNormal), normal_reply(false));
    EXPECT_EQ(request("127.0.0.1", line.port(), kNormal), normal_reply(true));
  }  // both servers stopped, every signalled thread joined
  const int handled = g_signals_handled.load() - handled_before;
  RecordProperty("signals_handled", handled);
  EXPECT_GT(handled, 0);
}

}  // namespace
}  // namespace sockecho
