// Limits no client can get around, tried as a hostile client would: tricklers cut at the request
// deadline, one source over its limit refused while another is served, an honest slow reader
// never cut, and every unfinished end a reset.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

ServerOptions options_with(unsigned workers, std::chrono::milliseconds timeout) {
  ServerOptions options;
  options.workers = workers;
  options.timeout = timeout;
  return options;
}

std::shared_ptr<Protocol> echo_with_deadline(std::chrono::milliseconds request_timeout) {
  Limits limits;
  limits.request_timeout = request_timeout;
  return echo_protocol(prefix_handler(std::string(test::kPrefix)), limits);
}

Address loopback(std::uint8_t last, std::uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl((127U << 24) | last);
  return {reinterpret_cast<const sockaddr*>(&in), sizeof in};
}

// Sends one byte every `every` until the connection fails or `count` bytes are sent: how many
// were sent, and the failure that stopped it (none when all were sent).
struct Trickled {
  int sent = 0;
  std::error_code failure;
};
Trickled trickle(Connection& c, std::chrono::milliseconds every, int count) {
  Trickled result;
  try {
    for (; result.sent < count; ++result.sent) {
      c.write_all("x");
      std::this_thread::sleep_for(every);  // ok-sleep: the hostile client's own pace
    }
  } catch (const std::system_error& e) {  // cut by the server: what is being tested
    result.failure = e.code();
  }
  return result;
}

// Connects to `to` (from `from`, if given) and reads: true when the server ends it with a reset,
// seen by the read or already by the connect (a reset can beat the end of the handshake's wait).
bool reset_at_once(const Address& to, const std::optional<Address>& from = std::nullopt) {
  try {
    Connection c = connect(to, {test::kPatience, from});
    c.set_timeout(test::kPatience);
    return test::read_until_reset(c) == "";
  } catch (const std::system_error& e) {
    return e.code() == std::errc::connection_reset;
  }
}

TEST(RequestDeadline, ATricklerIsCutAtTheDeadlineWhileAnotherClientIsServed) {
  // The idle limit (10 s) never runs out: a byte comes every 50 ms. The request deadline does.
  test::ServerThread server(options_with(2, 10s), echo_with_deadline(500ms));
  Connection trickler = connect("127.0.0.1", server.port(), test::kPatience);
  Trickled trickled;
  std::thread slow([&] { trickled = trickle(trickler, 50ms, 200); });
  EXPECT_EQ(request("127.0.0.1", server.port(), "meanwhile"),
            std::string(test::kPrefix) + "meanwhile");
  ASSERT_TRUE(server.wait_finished(2));
  slow.join();
  for (const ConnectionRecord& record : server.records()) {
    if (record.outcome == Outcome::ok) continue;
    EXPECT_EQ(record.outcome, Outcome::timeout) << record.detail;
    EXPECT_NE(record.detail.find("(request deadline)"), std::string::npos) << record.detail;
    EXPECT_GE(record.duration, 500ms);
    EXPECT_LT(record.duration, 500ms + 500ms) << "cut at the deadline, not at the idle limit";
    EXPECT_GT(record.bytes_in, 0U);
  }
  EXPECT_EQ(server.server().stats().count(Outcome::timeout), 1U);
  EXPECT_TRUE(test::is_reset(trickled.failure))
      << "cut with a reset: " << trickled.failure.message();
  EXPECT_LT(trickled.sent, 200);
}

TEST(RequestDeadline, ARequestThatArrivesInTimeIsAnswered) {
  test::ServerThread server(options_with(1, 10s), echo_with_deadline(2s));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  EXPECT_EQ(trickle(c, 20ms, 10).sent, 10);
  c.close_write();
  c.set_timeout(test::kPatience);
  EXPECT_EQ(c.read_to_end_string(), std::string(test::kPrefix) + "xxxxxxxxxx");
}

TEST(RequestDeadline, LineModeTimesEachLineFromItsFirstByte) {
  Limits limits;
  limits.request_timeout = std::chrono::milliseconds(400);  // spelled out for cppcheck 2.10
  test::ServerThread server(options_with(1, 10s), line_protocol(prefix_handler("> "), limits));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  c.set_timeout(test::kPatience);
  // Whole lines, each well inside the deadline, for longer than the deadline in all.
  for (int i = 0; i < 4; ++i) {
    c.write_all("line\n");
    std::this_thread::sleep_for(200ms);  // ok-sleep: the client's own pace between lines
  }
  // Then a line that trickles past it.
  const Trickled trickled = trickle(c, 50ms, 40);
  EXPECT_TRUE(test::is_reset(trickled.failure)) << trickled.failure.message();
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::timeout) << record.detail;
  EXPECT_NE(record.detail.find("(request deadline)"), std::string::npos) << record.detail;
  // The answers came before the reset.
  std::string answers(64, '\0');
  const ssize_t n = ::recv(c.fd(), answers.data(), answers.size(), MSG_DONTWAIT | MSG_PEEK);
  answers.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  EXPECT_EQ(answers.rfind("connect\n> line\n", 0), 0U) << answers;
}

TEST(PerSource, OneSourceOverItsLimitIsRefusedWhileAnotherIsServed) {
  ServerOptions options = options_with(8, 10s);
  options.max_per_source = 2;
  test::ServerThread server(options);
  const std::uint16_t port = server.port();
  // Two idle connections from 127.0.0.1 hold its share.
  std::vector<Connection> held;
  held.reserve(2);
  for (int i = 0; i < 2; ++i) held.push_back(connect(loopback(1, port), {test::kPatience, {}}));
  // Wait until the server has counted both against their source: they wait in the room then
  // (active counts a connection from its accept, a moment before its source is counted).
  ASSERT_TRUE(test::eventually([&] { return server.server().waiting() == 2; }));
  ASSERT_EQ(server.server().stats().active, 2U);

  EXPECT_TRUE(reset_at_once(loopback(1, port))) << "refused at once, with a reset";
  // Another source is served.
  Connection other = connect(loopback(1, port), {test::kPatience, loopback(2, 0)});
  other.set_timeout(test::kPatience);
  other.write_all("other source");
  other.close_write();
  EXPECT_EQ(other.read_to_end_string(), std::string(test::kPrefix) + "other source");
  ASSERT_TRUE(server.wait_finished(2));
  // The two records may finish in either order: the refused one's worker logs it after the
  // reset the client saw, possibly after the other source's answer.
  std::vector<ConnectionRecord> records = server.records();
  ASSERT_EQ(records.size(), 2U);
  if (records[0].outcome != Outcome::refused) std::swap(records[0], records[1]);
  EXPECT_EQ(records.at(0).outcome, Outcome::refused);
  EXPECT_EQ(records.at(0).reason, "per_source");
  EXPECT_EQ(records.at(0).peer.host(), "127.0.0.1");
  EXPECT_EQ(format_record(records.at(0)).find(" outcome=refused reason=per_source"),
            format_record(records.at(0)).find(" outcome="));
  EXPECT_EQ(records.at(1).outcome, Outcome::ok);
  EXPECT_EQ(records.at(1).peer.host(), "127.0.0.2");

  // Once a held connection ends, its source may connect again.
  held.pop_back();
  ASSERT_TRUE(server.wait_finished(3));
  EXPECT_EQ(request("127.0.0.1", port, "again"), std::string(test::kPrefix) + "again");
  EXPECT_EQ(server.server().stats().count(Outcome::refused), 1U);
}

TEST(PerSource, IPv4MappedPeersCountAsTheirIPv4Address) {
  ServerOptions options = options_with(4, 10s);
  options.max_per_source = 1;
  test::ServerThread server(options, prefix_handler(""), "::");
  Connection v4 = connect("127.0.0.1", server.port(), test::kPatience);  // ::ffff:127.0.0.1
  // Counted against its source once it waits in the room.
  ASSERT_TRUE(test::eventually([&] { return server.server().waiting() == 1; }));
  EXPECT_TRUE(reset_at_once(loopback(1, server.port())));
  // ::1 is another address.
  EXPECT_EQ(request("::1", server.port(), "six"), "six");
}

TEST(SlowReaders, AnHonestSlowReaderIsNeverCut) {
  // A 16 MiB reply against a 1 s idle limit. The client reads the first half at full speed,
  // then 64 KiB every 0.5 s for 5 s: each read frees far less than the send buffer needs before
  // it polls writable again, so only the server's look at its unsent bytes sees the progress.
  static const std::string big = test::pattern(std::size_t{16} << 20);
  auto huge_reply = [](const Request& /*request*/, Reply& reply) { reply.append_ref(big); };
  test::ServerThread server(options_with(1, 1s), huge_reply);
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  const int small = 64 * 1024;
  ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  c.set_timeout(test::kPatience);
  c.close_write();
  std::string got;
  std::vector<char> chunk(std::size_t{64} * 1024);
  const auto read_chunk = [&] {
    const std::size_t n = c.read_some(chunk.data(), chunk.size());
    got.append(chunk.data(), n);
    return n;
  };
  while (got.size() < big.size() / 2 && read_chunk() > 0) {
  }
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(500ms);  // ok-sleep: the slow reader's own pace
    std::size_t taken = 0;
    while (taken < chunk.size()) {
      const std::size_t n = read_chunk();
      if (n == 0) break;
      taken += n;
    }
  }
  while (read_chunk() > 0) {
  }
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::ok) << server.records().at(0).detail;
}

// --- The memory budget of request buffers ---

constexpr std::size_t kMiB = std::size_t{1} << 20;

// The echo protocol with a budget of max_total_bytes the test can read: what the waiting room
// holds for requests not yet complete, and the large buffers of requests being answered.
std::shared_ptr<Protocol> echo_with_budget(const std::shared_ptr<MemoryBudget>& budget) {
  Limits limits;
  limits.max_bytes = 8 * kMiB;
  limits.budget = budget;
  return echo_protocol(prefix_handler(std::string(test::kPrefix)), limits);
}

// Sends a whole request and half-closes; true when the server reset the connection instead of
// answering (seen by a write, or by the read after the half-close).
bool sent_and_reset(Connection& c, const std::string& request) {
  try {
    c.write_all(request);
    c.close_write();
    return test::read_until_reset(c).has_value();
  } catch (const std::system_error& e) {
    return test::is_reset(e.code());
  }
}

// Memory kept only for reuse gives way: a charge that finds the budget spent asks every
// reclaimer to let go, and is refused only if there is still no room.
TEST(MemoryBudget, AChargeThatFindsTheBudgetSpentAsksTheReclaimersFirst) {
  MemoryBudget budget(10);
  std::size_t kept = 0;  // what the reclaimer holds, charged
  int calls = 0;
  const MemoryBudget::Reclaimer reclaimer = budget.add_reclaimer([&] {
    ++calls;
    budget.refund(std::exchange(kept, 0));
  });
  ASSERT_TRUE(budget.try_charge(6));
  kept = 6;
  EXPECT_TRUE(budget.try_charge(4)) << "room left: no reclaimer asked";
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(budget.try_charge(5)) << "the kept 6 bytes given back for these 5";
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(budget.charged(), 9U);
  EXPECT_FALSE(budget.try_charge(2)) << "nothing left to give back";
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(budget.charged(), 9U) << "a refused charge charges nothing";
}

TEST(MemoryBudget, AReclaimerEndedIsNeverAskedAgainAndOneThatThrowsStopsNoOther) {
  MemoryBudget budget(4);
  int first = 0;
  int second = 0;
  std::optional<MemoryBudget::Reclaimer> ending = budget.add_reclaimer([&] { ++first; });
  const MemoryBudget::Reclaimer throwing = budget.add_reclaimer([&] {
    ++second;
    throw std::runtime_error("cannot let go");
  });
  ASSERT_TRUE(budget.try_charge(4));
  EXPECT_FALSE(budget.try_charge(1));
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  MemoryBudget::Reclaimer moved = std::move(*ending);
  ending.reset();
  EXPECT_FALSE(budget.try_charge(1));
  EXPECT_EQ(first, 2) << "a moved registration still holds";
  { const MemoryBudget::Reclaimer gone = std::move(moved); }
  EXPECT_FALSE(budget.try_charge(1));
  EXPECT_EQ(first, 2) << "asked after its registration ended";
  EXPECT_EQ(second, 3);
}

// Budgets shared by threads: charges that race with reclaimers and with registrations ending
// never lose or double a byte.
TEST(MemoryBudget, ChargesRacingReclaimersKeepTheCountExact) {
  MemoryBudget budget(64);
  std::mutex kept_mutex;
  std::size_t kept = 0;
  const MemoryBudget::Reclaimer reclaimer = budget.add_reclaimer([&] {
    const std::lock_guard<std::mutex> lock(kept_mutex);
    budget.refund(std::exchange(kept, 0));
  });
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (!budget.try_charge(8)) continue;
        if (i % 2 == 0) {
          budget.refund(8);
        } else {  // kept for reuse: the reclaimer's to give back
          const std::lock_guard<std::mutex> lock(kept_mutex);
          kept += 8;
        }
        if (i % 1000 == 0) {
          const MemoryBudget::Reclaimer passing = budget.add_reclaimer([] {});
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::lock_guard<std::mutex> lock(kept_mutex);
  EXPECT_EQ(budget.charged(), kept);
}

TEST(MemoryBudget, ARequestOverTheTotalIsResetWhileTheOthersAreServed) {
  const auto budget = std::make_shared<MemoryBudget>(6 * kMiB);
  const std::shared_ptr<Protocol> protocol = echo_with_budget(budget);
  test::ServerThread server(options_with(4, 10s), protocol);
  const Address to = loopback(1, server.port());
  const std::string three(3 * kMiB, 'a');

  // A holds 3 MiB in the waiting room, in a buffer grown to 4 MiB, and has not finished its
  // request.
  Connection a = connect(to, {test::kPatience, {}});
  a.set_timeout(test::kPatience);
  a.write_all(three);
  ASSERT_TRUE(test::eventually([&] { return budget->charged() == 4 * kMiB; })) << budget->charged();

  // B's 3 MiB would need 4 MiB more: over the budget of 6, reset, whatever its own size.
  Connection b = connect(to, {test::kPatience, {}});
  b.set_timeout(test::kPatience);
  EXPECT_TRUE(sent_and_reset(b, three));

  // A, within the budget, is answered in full; and once it is done, a request as large as B's
  // is too (its memory came back).
  a.close_write();
  EXPECT_EQ(a.read_to_end_string(), std::string(test::kPrefix) + three);
  EXPECT_EQ(request(to.host(), server.port(), three), std::string(test::kPrefix) + three);

  ASSERT_TRUE(server.wait_finished(3));
  // In any order: a worker may log its reset after the next client is already answered.
  const std::vector<ConnectionRecord> records = server.records();
  const auto over = std::find_if(records.begin(), records.end(), [](const ConnectionRecord& r) {
    return r.outcome == Outcome::too_large;
  });
  ASSERT_NE(over, records.end());
  EXPECT_NE(over->detail.find("max_total_bytes"), std::string::npos) << over->detail;
  EXPECT_EQ(server.server().stats().count(Outcome::ok), 2U);
  // Kept for the next large requests: never more than the budget, and nothing once idle (the
  // protocol's at its idle(); the waiting room's spares once none has been used for the server's
  // timeout, which fast_path_test's SpareBuffers reads).
  EXPECT_LE(budget->charged(), 6 * kMiB);
  protocol->idle(Logger{});
  EXPECT_EQ(protocol->buffered_bytes(), 0U);
}

TEST(MemoryBudget, ARequestWaitingIsChargedFromItsFirstByteUntilItIsAnswered) {
  const auto budget = std::make_shared<MemoryBudget>(6 * kMiB);
  // The timeout is how long the room keeps its spare buffers once none is used: the end waits
  // for it.
  test::ServerThread server(options_with(4, 3s), echo_with_budget(budget));
  const Address to = loopback(1, server.port());

  // B's first byte waits in the room, charged (its buffer's smallest size).
  Connection b = connect(to, {test::kPatience, {}});
  b.set_timeout(test::kPatience);
  b.write_all("b");
  ASSERT_TRUE(test::eventually([&] { return server.server().waiting() == 1; }));
  ASSERT_TRUE(test::eventually([&] { return budget->charged() > 0; }));
  EXPECT_LE(budget->charged(), 4096U);

  // A large request from another client comes and goes meanwhile.
  const std::string three(3 * kMiB, 'b');
  EXPECT_EQ(request(to.host(), server.port(), three), std::string(test::kPrefix) + three);

  // B grows to 3 MiB and more (a buffer of 4 MiB, charged as it grows: the large request's,
  // kept as a spare), and is answered; then nothing is charged once the spares are freed.
  const std::string rest(3 * kMiB, 'c');
  b.write_all(rest);
  b.close_write();
  EXPECT_EQ(b.read_to_end_string(), std::string(test::kPrefix) + "b" + rest);
  ASSERT_TRUE(server.wait_finished(2));
  EXPECT_EQ(server.server().stats().count(Outcome::ok), 2U);
  EXPECT_TRUE(test::eventually([&] { return budget->charged() == 0; })) << budget->charged();
}

TEST(MemoryBudget, LineModeCountsLongLinesAgainstTheBudgetToo) {
  Limits limits;
  limits.max_bytes = 8 * kMiB;
  limits.max_total_bytes = 2 * kMiB;
  test::ServerThread server(options_with(2, 10s),
                            line_protocol(prefix_handler(std::string(test::kPrefix)), limits));
  Connection c = connect(loopback(1, server.port()), {test::kPatience, {}});
  c.set_timeout(test::kPatience);
  EXPECT_TRUE(sent_and_reset(c, std::string(3 * kMiB, 'l') + "\n"));
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::too_large);
}

}  // namespace
}  // namespace sockecho
