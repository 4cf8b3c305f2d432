#include "sockecho/datagram_server.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sockecho/datagram.hpp"
#include "sockecho/log.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::kPatience;
using test::kPrefix;

// A DatagramServer on an ephemeral port, run on a thread of its own, stopped and joined by the
// destructor. Its log goes to a pipe the test can read.
class DatagramServerThread {
 public:
  explicit DatagramServerThread(const std::string& host = "127.0.0.1",
                                Handler handler = prefix_handler(std::string(kServerDefaultPrefix)),
                                DatagramOptions options = {})
      : log_(test::make_pipe()) {
    options.log = Logger(log_.write.get(), LogLevel::normal);
    server_ = std::make_unique<DatagramServer>(DatagramSocket::bind(host, 0), std::move(handler),
                                               std::move(options));
    thread_ = std::thread([this] { server_->run(); });
  }
  DatagramServerThread(const DatagramServerThread&) = delete;
  DatagramServerThread& operator=(const DatagramServerThread&) = delete;
  DatagramServerThread(DatagramServerThread&&) = delete;
  DatagramServerThread& operator=(DatagramServerThread&&) = delete;
  ~DatagramServerThread() { stop(); }

  [[nodiscard]] std::uint16_t port() const { return server_->address().port(); }
  [[nodiscard]] DatagramServer& server() { return *server_; }
  // Stops and joins the server; returns everything it logged.
  std::string stop() {
    if (thread_.joinable()) {
      server_->stop();
      thread_.join();
      log_.write.reset();
      logged_ = test::read_all(log_.read.get());
    }
    return logged_;
  }

 private:
  test::Pipe log_;
  std::unique_ptr<DatagramServer> server_;
  std::thread thread_;
  std::string logged_;
};

// The next datagram on `socket` within `wait`; nullopt when none came.
std::optional<std::string> next(DatagramSocket& socket,
                                std::chrono::milliseconds wait = kPatience) {
  std::string data(kDatagramBufferSize, '\0');
  try {
    const std::optional<Received> got =
        socket.receive(data.data(), data.size(), Clock::now() + wait);
    if (!got || got->truncated) return std::nullopt;
    data.resize(got->size);
    return data;
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::timed_out) return std::nullopt;
    throw;
  }
}

DatagramSocket client_of(const DatagramServerThread& server, const std::string& host = "127.0.0.1",
                         const std::optional<std::string>& source = std::nullopt) {
  std::optional<Address> from;
  if (source) from = resolve(*source, 0)[0];
  return DatagramSocket::connect(host, server.port(), from);
}

TEST(DatagramServer, AnswersEachDatagramWithThePrefix) {
  DatagramServerThread server;
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send("hello"));
  EXPECT_EQ(next(client), kPrefix + "hello");
  ASSERT_TRUE(client.send(""));  // an empty datagram is a request too
  EXPECT_EQ(next(client), kPrefix);
  const std::string log = server.stop();
  const ServerStats stats = server.server().stats();
  EXPECT_EQ(stats.accepted, 2U);
  EXPECT_EQ(stats.count(Outcome::ok), 2U);
  EXPECT_EQ(stats.bytes_in, 5U);
  EXPECT_EQ(stats.bytes_out, 2 * kPrefix.size() + 5);
  // Successes are counted, not logged; the stop line has the counters.
  EXPECT_EQ(log.find("datagram peer="), std::string::npos) << log;
  EXPECT_NE(log.find("start listen=udp:127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find("stop datagrams=2 ok=2"), std::string::npos) << log;
}

TEST(DatagramServer, WholeDatagramsAtTheProtocolMaximum) {
  for (const auto& [host, size] : {std::pair<std::string, std::size_t>{"127.0.0.1", 65507},
                                   std::pair<std::string, std::size_t>{"::1", 65527}}) {
    SCOPED_TRACE(host);
    DatagramServerThread server(host, prefix_handler(""));
    DatagramSocket client = client_of(server, host);
    const std::string big = test::pattern(size);
    ASSERT_TRUE(client.send(big));
    const std::optional<std::string> reply = next(client);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->size(), size);
    EXPECT_EQ(*reply, big);
  }
}

TEST(DatagramServer, AReplyThatWouldNotFitIsNotSentAndIsCountedTooLarge) {
  DatagramServerThread server;
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send(test::pattern(kMaxDatagramIpv4)));  // + the prefix: over the maximum
  // One loop serves datagrams in order: once the small one is answered, the big one was handled,
  // and had it been answered that reply would have come first.
  ASSERT_TRUE(client.send("after"));
  EXPECT_EQ(next(client), kPrefix + "after");
  const std::string log = server.stop();
  EXPECT_EQ(server.server().stats().count(Outcome::too_large), 1U);
  EXPECT_EQ(server.server().stats().count(Outcome::ok), 1U);
  EXPECT_NE(log.find("datagram peer=127.0.0.1:" + std::to_string(client.address().port()) +
                     " in=65507 outcome=too_large reason=reply_too_large"),
            std::string::npos)
      << log;
}

TEST(DatagramServer, MaxBytesRefusesLargerRequests) {
  DatagramOptions options;
  options.max_bytes = 10;
  DatagramServerThread server("127.0.0.1", prefix_handler(std::string(kServerDefaultPrefix)),
                              options);
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send(std::string(11, 'x')));
  ASSERT_TRUE(client.send(std::string(10, 'y')));
  EXPECT_EQ(next(client), kPrefix + std::string(10, 'y'));
  EXPECT_NE(server.stop().find("outcome=too_large reason=max_bytes"), std::string::npos);
}

TEST(DatagramServer, AReplyNeverGrowsPastTheRequestByMoreThanMaxGrowth) {
  // A handler that amplifies: 100 bytes for any request.
  const Handler amplifier = [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    reply.append(request);
    reply.append(std::string(100, '!'));
  };
  DatagramServerThread server("127.0.0.1", amplifier);  // max_growth: the default prefix, 10
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send("x"));
  EXPECT_EQ(next(client, 200ms), std::nullopt);
  const std::string log = server.stop();
  EXPECT_EQ(server.server().stats().count(Outcome::too_large), 1U);
  EXPECT_NE(log.find("reason=reply_growth"), std::string::npos) << log;
}

TEST(DatagramServer, AHandlerThatThrowsCostsOneDatagram) {
  const Handler picky = [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    if (request == "bad") throw std::runtime_error("no thanks");
    reply.append_ref(request);
  };
  DatagramServerThread server("127.0.0.1", picky);
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send("bad"));
  ASSERT_TRUE(client.send("good"));
  EXPECT_EQ(next(client), "good");
  const std::string log = server.stop();
  EXPECT_EQ(server.server().stats().count(Outcome::error), 1U);
  EXPECT_NE(log.find("outcome=error error=\"no thanks\""), std::string::npos) << log;
}

TEST(DatagramServer, TheReplysOutcomeIsHonouredAsOverAStream) {
  DatagramServerThread server("127.0.0.1", test::outcome_handler);
  DatagramSocket client = client_of(server);
  ASSERT_TRUE(client.send("busy"));
  EXPECT_EQ(next(client), "try later") << "an answer that is no success is still sent";
  ASSERT_TRUE(client.send("boom"));
  ASSERT_TRUE(client.send("good"));
  EXPECT_EQ(next(client), "good") << "a failed reply is never sent: the next one comes first";
  const std::string log = server.stop();
  const ServerStats stats = server.server().stats();
  EXPECT_EQ(stats.count(Outcome::refused), 1U);
  EXPECT_EQ(stats.count(Outcome::failed), 1U);
  EXPECT_EQ(stats.count(Outcome::ok), 1U);
  EXPECT_EQ(stats.bytes_out, 9U + 4U) << "the failed reply's bytes were not sent";
  EXPECT_NE(log.find("outcome=refused"), std::string::npos) << log;
}

TEST(DatagramServer, ManyClientsInterleavedEachGetTheirOwnReplies) {
  constexpr int kClients = 8;
  constexpr int kRounds = 50;
  DatagramServerThread server;
  std::vector<DatagramSocket> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) clients.push_back(client_of(server));
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < kClients; ++i) {
      ASSERT_TRUE(clients[i].send("c" + std::to_string(i) + "r" + std::to_string(round)));
    }
    for (int i = 0; i < kClients; ++i) {
      ASSERT_EQ(next(clients[i]), kPrefix + "c" + std::to_string(i) + "r" + std::to_string(round));
    }
  }
  server.stop();
  EXPECT_EQ(server.server().stats().count(Outcome::ok), std::uint64_t{kClients} * kRounds);
}

TEST(DatagramServer, FailureLinesAreRateLimited) {
  DatagramOptions options;
  options.max_bytes = 1;
  DatagramServerThread server("127.0.0.1", prefix_handler(""), options);
  DatagramSocket client = client_of(server);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client.send("too long"));
  ASSERT_TRUE(client.send("k"));
  EXPECT_EQ(next(client), "k");
  const std::string log = server.stop();
  EXPECT_EQ(server.server().stats().count(Outcome::too_large), 20U);
  // Twenty failures within a second: one line (the first), the rest only counted.
  std::size_t lines = 0;
  for (std::size_t at = log.find("datagram peer="); at != std::string::npos;
       at = log.find("datagram peer=", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1U) << log;
}

TEST(DatagramServer, AFloodFromOneSourceIsPausedAndAnotherIsStillAnswered) {
  constexpr unsigned kRate = 20;
  constexpr int kFlood = 100;
  DatagramOptions options;
  options.rate_per_source = kRate;
  DatagramServerThread server("127.0.0.1", prefix_handler(""), options);
  DatagramSocket flooder = client_of(server);
  DatagramSocket other = client_of(server, "127.0.0.1", "127.0.0.2");
  const auto start = Clock::now();
  for (int i = 0; i < kFlood; ++i) ASSERT_TRUE(flooder.send("f"));
  // Served in order: the other source's answer means every flood datagram was handled.
  ASSERT_TRUE(other.send("o"));
  EXPECT_EQ(next(other), "o");
  const auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  int answered = 0;
  while (next(flooder, 0ms)) ++answered;
  EXPECT_GE(answered, static_cast<int>(kRate));  // the first second's burst
  EXPECT_LE(answered, static_cast<int>(kRate + kRate * elapsed + 1));
  // Paused, not banned: once its bucket refills the source is answered again (bounded tries).
  bool again = false;
  for (int i = 0; i < 40 && !again; ++i) {
    ASSERT_TRUE(flooder.send("again"));
    again = next(flooder, 100ms) == std::optional<std::string>("again");
  }
  EXPECT_TRUE(again);
  const std::string log = server.stop();
  EXPECT_GE(server.server().stats().count(Outcome::refused),
            static_cast<std::uint64_t>(kFlood - answered));
  EXPECT_NE(log.find("outcome=refused reason=rate"), std::string::npos) << log;
  EXPECT_NE(log.find("rate_per_source=20"), std::string::npos) << log;
}

TEST(DatagramServer, TheBudgetHoldsByDefaultOnEveryAddressLoopbackIncluded) {
  DatagramServerThread loopback;
  EXPECT_EQ(loopback.server().rate_per_source(), kDefaultDatagramRate);
  EXPECT_EQ(loopback.server().bytes_per_source(), kDefaultDatagramBytes);
  const DatagramServer any(DatagramSocket::bind("0.0.0.0", 0), prefix_handler(""));
  EXPECT_EQ(any.rate_per_source(), kDefaultDatagramRate);
  EXPECT_EQ(any.bytes_per_source(), kDefaultDatagramBytes);
}

TEST(DatagramServer, RepliesOverTheByteBudgetAreNotSentUntilItRefills) {
  DatagramOptions options;
  options.rate_per_source = 0;
  options.bytes_per_source = 3000;  // three 1,000-byte replies a second
  DatagramServerThread server("127.0.0.1", prefix_handler(""), options);
  DatagramSocket client = client_of(server);
  const std::string request(1000, 'b');
  int answered = 0;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(client.send(request));
    if (next(client, 200ms)) ++answered;
  }
  const double elapsed = 10 * 0.2;
  EXPECT_GE(answered, 3);
  EXPECT_LE(answered, static_cast<int>(3 + 3 * elapsed + 1));
  const std::string log = server.stop();
  EXPECT_NE(log.find("outcome=refused reason=rate_bytes"), std::string::npos) << log;
}

TEST(DatagramServer, NoReplyToAWellKnownSourcePortOrItsOwnAddressAndPort) {
  DatagramServerThread server("127.0.0.1", prefix_handler(""));
  OwnAddresses own(server.server().address());
  EXPECT_TRUE(own.is_own(server.server().address()));
  EXPECT_FALSE(own.is_own(resolve("127.0.0.1", server.port() + 1)[0]));
  EXPECT_FALSE(own.is_own(resolve("127.0.0.2", server.port())[0]));
  // Bound to every address: any of this host's addresses with the port is its own.
  const std::uint16_t port = server.port();
  OwnAddresses every(resolve("0.0.0.0", port)[0]);
  EXPECT_TRUE(every.is_own(resolve("127.0.0.1", port)[0]));
  EXPECT_FALSE(every.is_own(resolve("127.0.0.1", port + 1)[0]));
  EXPECT_FALSE(every.is_own(resolve("192.0.2.1", port)[0]));  // TEST-NET-1, no host's
}

TEST(DatagramServer, StopBeforeRunReturnsAtOnce) {
  DatagramServer server(DatagramSocket::bind("127.0.0.1", 0), prefix_handler(""));
  server.stop();
  server.run();
  EXPECT_EQ(server.stats().accepted, 0U);
}

TEST(SourceRateLimit, ABurstOfOneSecondThenTheRate) {
  SourceRateLimit limit(10);
  const Address a = resolve("127.0.0.1", 1)[0];
  const Address b = resolve("127.0.0.2", 1)[0];
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(limit.admit(a, t0)) << i;
  EXPECT_FALSE(limit.admit(a, t0));
  EXPECT_TRUE(limit.admit(b, t0));  // a bucket of its own
  EXPECT_FALSE(limit.admit(a, t0 + 50ms));
  EXPECT_TRUE(limit.admit(a, t0 + 100ms));  // a tenth of a second: one more
  EXPECT_FALSE(limit.admit(a, t0 + 100ms));
  // The port is not part of the source.
  EXPECT_FALSE(limit.admit(resolve("127.0.0.1", 2)[0], t0 + 100ms));
  // IPv4-mapped IPv6 is its IPv4 address.
  EXPECT_FALSE(limit.admit(resolve("::ffff:127.0.0.1", 3)[0], t0 + 100ms));
}

TEST(SourceRateLimit, TheTableIsBoundedAndNewSourcesShareOneBucketPastIt) {
  SourceRateLimit limit(2, /*bytes_rate=*/0, /*max_sources=*/4);
  const Clock::time_point t0 = Clock::now();
  for (int i = 1; i <= 4; ++i) {
    EXPECT_TRUE(limit.admit(resolve("10.0.0." + std::to_string(i), 1)[0], t0));
  }
  EXPECT_EQ(limit.tracked(), 4U);
  // Past the bound, new sources share one bucket of two.
  EXPECT_TRUE(limit.admit(resolve("10.0.1.1", 1)[0], t0));
  EXPECT_TRUE(limit.admit(resolve("10.0.1.2", 1)[0], t0));
  EXPECT_FALSE(limit.admit(resolve("10.0.1.3", 1)[0], t0));
  EXPECT_EQ(limit.tracked(), 4U);
  // Once their buckets have refilled, tracked sources make room again.
  EXPECT_TRUE(limit.admit(resolve("10.0.2.1", 1)[0], t0 + 2s));
  EXPECT_LE(limit.tracked(), 4U);
}

TEST(SourceRateLimit, ABytesBudgetOfOneSecondThenItsRate) {
  SourceRateLimit limit(0, 1000);
  const Address a = resolve("127.0.0.1", 1)[0];
  const Clock::time_point t0 = Clock::now();
  ASSERT_TRUE(limit.admit(a, t0));
  EXPECT_TRUE(limit.admit_reply(600));
  ASSERT_TRUE(limit.admit(a, t0));
  EXPECT_FALSE(limit.admit_reply(600));  // 400 left
  ASSERT_TRUE(limit.admit(a, t0 + 200ms));
  EXPECT_TRUE(limit.admit_reply(600));  // 400 + 200 refilled
  ASSERT_TRUE(limit.admit(resolve("127.0.0.2", 1)[0], t0 + 200ms));
  EXPECT_TRUE(limit.admit_reply(1000));  // a budget of its own
}

TEST(SourceRateLimit, ZeroAdmitsEverything) {
  SourceRateLimit limit(0);
  const Address a = resolve("127.0.0.1", 1)[0];
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limit.admit(a));
  EXPECT_EQ(limit.tracked(), 0U);
}

}  // namespace
}  // namespace sockecho
