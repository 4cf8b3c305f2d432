// sockecho-server --udp and sockecho-client --udp, the programs: ready line, whole datagrams at
// the protocol maximum, the too-large case, the client's timeout, the rate limit, signals.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/datagram.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::client_program;
using test::kPatience;
using test::kPrefix;
using test::RunResult;
using test::ServerProcess;

// Runs sockecho-client --udp against host:port with `args` and stdin `input`.
RunResult udp_client(std::uint16_t port, std::vector<std::string> args, std::string_view input = {},
                     const std::string& host = "127.0.0.1") {
  args.insert(args.begin(),
              {client_program(), "--udp", "--host", host, "--port", std::to_string(port)});
  return test::run(args, input);
}

std::optional<std::string> next(DatagramSocket& socket, std::chrono::milliseconds wait) {
  std::string data(kDatagramBufferSize, '\0');
  try {
    const std::optional<Received> got =
        socket.receive(data.data(), data.size(), Clock::now() + wait);
    if (!got) return std::nullopt;
    data.resize(got->size);
    return data;
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::timed_out) return std::nullopt;
    throw;
  }
}

TEST(UdpPrograms, ReadyLineNamesUdpAndTheRealPort) {
  ServerProcess v4({"--udp"});
  EXPECT_EQ(v4.ready_line(), "listening on udp:127.0.0.1:" + std::to_string(v4.port()));
  ServerProcess v6({"--udp", "--host", "::1"});
  EXPECT_EQ(v6.ready_line(), "listening on udp:[::1]:" + std::to_string(v6.port()));
}

TEST(UdpPrograms, ClientSendsOneDatagramAndPrintsTheReply) {
  ServerProcess server({"--udp"});
  const RunResult r = udp_client(server.port(), {"--send", "hi there"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, kPrefix + "hi there");
  EXPECT_NE(r.err.find("sent OK (8 bytes)"), std::string::npos) << r.err;
  const RunResult quiet = udp_client(server.port(), {"--quiet"});
  EXPECT_EQ(quiet.out, kPrefix + "hello\n");
  EXPECT_EQ(quiet.err, "");
}

TEST(UdpPrograms, WholeDatagramsAtTheProtocolMaximumWithAnEmptyPrefix) {
  for (const auto& [host, size] : {std::pair<std::string, std::size_t>{"127.0.0.1", 65507},
                                   std::pair<std::string, std::size_t>{"::1", 65527}}) {
    SCOPED_TRACE(host);
    ServerProcess server({"--udp", "--prefix", "", "--host", host});
    const std::string big = test::pattern(size);
    const RunResult r = udp_client(server.port(), {"--file", "-", "--quiet"}, big, host);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out.size(), size);
    EXPECT_TRUE(r.out == big);
  }
}

TEST(UdpPrograms, TooLargeGetsNoReplyIsCountedAndLogged) {
  ServerProcess server({"--udp"});
  const auto start = Clock::now();
  const RunResult r =
      udp_client(server.port(), {"--file", "-", "--timeout", "0.5"}, test::pattern(65507));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("no reply from udp:127.0.0.1:"), std::string::npos) << r.err;
  EXPECT_LT(Clock::now() - start, kPatience);
  const std::optional<std::string> line = server.wait_stderr("datagram peer=");
  ASSERT_TRUE(line) << server.err();
  EXPECT_NE(line->find("in=65507 outcome=too_large reason=reply_too_large"), std::string::npos)
      << *line;
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find("stop datagrams=1 ok=0 timeout=0 too_large=1"), std::string::npos)
      << server.err();
}

TEST(UdpPrograms, ClientTimesOutWhenNothingAnswers) {
  const DatagramSocket silent = DatagramSocket::bind("127.0.0.1", 0);
  const auto start = Clock::now();
  const RunResult r = udp_client(silent.address().port(), {"--timeout", "0.3"});
  const auto took = Clock::now() - start;
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("within 0.3 s (--timeout)"), std::string::npos) << r.err;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
}

TEST(UdpPrograms, ClientSaysWhenNothingListens) {
  std::uint16_t port = 0;
  {
    const DatagramSocket gone = DatagramSocket::bind("127.0.0.1", 0);
    port = gone.address().port();
  }
  const RunResult r = udp_client(port, {"--timeout", "10"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("Connection refused"), std::string::npos) << r.err;
}

TEST(UdpPrograms, LineModeIsAUsageError) {
  const RunResult server = test::run({test::server_program(), "--udp", "--mode", "line"});
  EXPECT_EQ(server.status, 2) << server.err;
  EXPECT_NE(server.err.find("--udp is for echo mode"), std::string::npos) << server.err;
  const RunResult client = test::run({client_program(), "--udp", "--mode", "line"});
  EXPECT_EQ(client.status, 2) << client.err;
  const RunResult exec = test::run({test::server_program(), "--udp", "--exec", "cat"});
  EXPECT_EQ(exec.status, 2) << exec.err;
  const RunResult rate = test::run({test::server_program(), "--udp-rate", "5"});
  EXPECT_EQ(rate.status, 2) << rate.err;
}

TEST(UdpPrograms, SignalsStopItCleanlyWithCountersAndSigusr1PrintsThem) {
  ServerProcess server({"--udp", "--prefix", ""});
  ASSERT_EQ(udp_client(server.port(), {"--send", "x", "--quiet"}).out, "x");
  server.signal(SIGUSR1);
  const std::optional<std::string> stats = server.wait_stderr(" stats ");
  ASSERT_TRUE(stats) << server.err();
  // The reply may be out before its outcome is counted: only its arrival is certain.
  EXPECT_NE(stats->find(" stats datagrams=1 "), std::string::npos) << *stats;
  for (const int signal : {SIGUSR2, SIGPIPE, SIGWINCH, SIGALRM}) server.signal(signal);
  ASSERT_EQ(udp_client(server.port(), {"--send", "y", "--quiet"}).out, "y");
  server.signal(SIGINT);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find("stop datagrams=2 ok=2"), std::string::npos) << server.err();
}

TEST(UdpPrograms, RateLimitPausesAFloodAndAnswersAnotherSource) {
  constexpr int kFlood = 60;
  ServerProcess server({"--udp", "--prefix", "", "--udp-rate", "10"});
  DatagramSocket flooder = DatagramSocket::connect("127.0.0.1", server.port());
  DatagramSocket other =
      DatagramSocket::connect("127.0.0.1", server.port(), resolve("127.0.0.2", 0)[0]);
  for (int i = 0; i < kFlood; ++i) ASSERT_TRUE(flooder.send("f"));
  ASSERT_TRUE(other.send("o"));  // served after the flood: the flood was handled by then
  EXPECT_EQ(next(other, kPatience), "o");
  int answered = 0;
  while (next(flooder, 0ms)) ++answered;
  EXPECT_GE(answered, 10);
  EXPECT_LT(answered, kFlood);
  const std::optional<std::string> line = server.wait_stderr("outcome=refused reason=rate");
  EXPECT_TRUE(line) << server.err();
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

// The number after `word=` in the last line of `log` that has it; -1 when there is none.
long long last_count(const std::string& log, const std::string& word) {
  const std::size_t at = log.rfind(" " + word + "=");
  if (at == std::string::npos) return -1;
  return std::stoll(log.substr(at + word.size() + 2));
}

TEST(UdpPrograms, EmptyDatagramsAreAmplifiedByThePrefixAndNoMore) {
  constexpr int kCount = 200;  // within the default budget of 1000 a second
  ServerProcess server({"--udp"});
  DatagramSocket client = DatagramSocket::connect("127.0.0.1", server.port());
  int answered = 0;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(client.send(""));
    if (next(client, kPatience) == std::optional<std::string>(kPrefix)) ++answered;
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0) << server.err();
  EXPECT_EQ(answered, kCount);
  const long long out = last_count(server.err(), "bytes_out");
  EXPECT_EQ(out, static_cast<long long>(kPrefix.size()) * kCount) << server.err();
  // On the wire, with the 28 bytes of IPv4 and UDP headers each way: what docs/operations.md says.
  constexpr double kHeaders = 28;
  const double ratio = (static_cast<double>(out) + kHeaders * kCount) / (kHeaders * kCount);
  EXPECT_LE(ratio, 1.36) << ratio;
}

TEST(UdpPrograms, ADatagramSpoofedFromTheServersOwnAddressIsNeverAnswered) {
  const std::string why = test::enter_own_network_namespace();
  if (!why.empty()) GTEST_SKIP() << "no network namespace of the test's own: " << why;
  ServerProcess server({"--udp", "--prefix", ""});
  const Address own = resolve("127.0.0.1", server.port())[0];
  test::send_spoofed(own, own, "loop?");
  test::send_spoofed(resolve("127.0.0.1", 7)[0], own, "from echo's port");
  // A client's datagram, after both: once it is answered, the two were handled.
  DatagramSocket client = DatagramSocket::connect("127.0.0.1", server.port());
  ASSERT_TRUE(client.send("client"));
  EXPECT_EQ(next(client, kPatience), "client");
  EXPECT_TRUE(server.wait_stderr("outcome=refused reason=loop")) << server.err();
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0) << server.err();
  // Answered, the first would have come back to the server, again and again.
  EXPECT_NE(server.err().find("stop datagrams=3 ok=1 "), std::string::npos) << server.err();
  EXPECT_EQ(last_count(server.err(), "refused"), 2) << server.err();
}

TEST(UdpPrograms, ALoopBetweenTwoServersEndsByItselfWithinTheBudget) {
  const std::string why = test::enter_own_network_namespace();
  if (!why.empty()) GTEST_SKIP() << "no network namespace of the test's own: " << why;
  ServerProcess a({"--udp"});
  ServerProcess b({"--udp", "--host", "127.0.0.2"});
  // One datagram to A that says it came from B: A answers B, B answers A, each reply 10 bytes
  // (the prefix) longer than the last, until a budget withholds one.
  test::send_spoofed(resolve("127.0.0.2", b.port())[0], resolve("127.0.0.1", a.port())[0], "ping");
  // Ended: neither server's counters move for half a second (bounded by kPatience overall).
  const auto datagrams = [&](ServerProcess& server) {
    server.signal(SIGUSR1);
    const std::optional<std::string> stats = server.wait_stderr(" stats datagrams=");
    return stats ? last_count(*stats, "datagrams") : -1;
  };
  long long before = -1;
  bool ended = false;
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (!ended && std::chrono::steady_clock::now() < until) {
    const long long now = datagrams(a) + datagrams(b);
    ended = now == before && now > 0;
    before = now;
    if (!ended) std::this_thread::sleep_for(500ms);  // the interval between two counts
  }
  EXPECT_TRUE(ended) << a.err() << b.err();
  a.signal(SIGTERM);
  b.signal(SIGTERM);
  ASSERT_EQ(a.wait(), 0) << a.err();
  ASSERT_EQ(b.wait(), 0) << b.err();
  // Within each server's byte budget (1 MiB a second) for the time the loop ran, and ended by a
  // withheld reply.
  for (ServerProcess* server : {&a, &b}) {
    const long long out = last_count(server->err(), "bytes_out");
    EXPECT_GT(out, 0) << server->err();
    EXPECT_LE(out, 3LL << 20) << server->err();
  }
  EXPECT_NE((a.err() + b.err()).find("reason=rate"), std::string::npos) << a.err() << b.err();
}

}  // namespace
}  // namespace sockecho
