// The daemon's promises under slow, stuck, hostile and numerous clients, tested on the library's
// Server in this process (a SIGPIPE here would kill the test binary, so surviving is the proof).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using test::kPrefix;

ServerOptions with(unsigned workers, std::chrono::milliseconds timeout) {
  ServerOptions options;
  options.workers = workers;
  options.timeout = timeout;
  return options;
}

// The document's echo protocol with the default prefix and a request limit.
std::shared_ptr<Protocol> echo_limited(std::size_t max_bytes) {
  return echo_protocol(prefix_handler(kPrefix), Limits{max_bytes});
}

// Connects and waits until the server has taken the connection (it shows in stats().active), so
// the test knows a worker is now busy with it.
Connection occupy_worker(test::ServerThread& server, std::uint64_t active_before) {
  Connection c = connect("127.0.0.1", server.port());
  c.write_all("partial request, no half-close");
  // The server reports the connection active right after accept; bounded by kPatience.
  const auto deadline = Clock::now() + test::kPatience;
  while (server.server().stats().active <= active_before && Clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_GT(server.server().stats().active, active_before);
  return c;
}

void abort_on_close(const Connection& c) {
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
}

TEST(Daemon, AStalledClientDoesNotDelayAnotherWithFourWorkers) {
  test::ServerThread server(with(4, 20s));
  Connection stalled = occupy_worker(server, 0);
  RequestOptions options;
  options.timeout = 5s;  // far below the server's 20 s: only a free worker can answer in time
  const auto start = Clock::now();
  EXPECT_EQ(request("127.0.0.1", server.port(), "next", options), kPrefix + "next");
  const auto took = Clock::now() - start;
  // A free worker answers at once; behind the stalled client it would take the server's 20 s.
  // (The client's 5 s give-up would throw above, so a bound at 5 s would check nothing.)
  EXPECT_LT(took, 1s);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records()[0].bytes_in, 4U) << "the answered one is the second client";
  EXPECT_EQ(server.server().stats().active, 1U) << "the stalled client is still connected";
  RecordProperty(
      "answered_ms",
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST(Daemon, OneWorkerIsStrictlySerial) {
  test::ServerThread server(with(1, 20s));
  Connection first = occupy_worker(server, 0);
  Connection second = connect("127.0.0.1", server.port());
  second.write_all("second");
  second.close_write();
  second.set_timeout(300ms);
  char byte = 0;
  try {
    (void)second.read_some(&byte, 1);
    FAIL() << "the second client was answered while the first was in progress";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
  }
  first.close_write();
  EXPECT_EQ(first.read_to_end_string(), kPrefix + "partial request, no half-close");
  second.set_timeout(0ms);
  EXPECT_EQ(second.read_to_end_string(), kPrefix + "second");
}

TEST(Daemon, OneWorkerDropsAStalledClientAfterTheTimeoutAndServesTheNext) {
  test::ServerThread server(with(1, 1s));
  Connection stalled = occupy_worker(server, 0);
  RequestOptions options;
  options.timeout = 10s;
  EXPECT_EQ(request("127.0.0.1", server.port(), "next", options), kPrefix + "next");
  ASSERT_TRUE(server.wait_finished(2));
  const auto records = server.records();
  EXPECT_EQ(records[0].outcome, Outcome::timeout);
  EXPECT_NE(records[0].detail.find("Connection timed out"), std::string::npos) << records[0].detail;
  EXPECT_EQ(records[1].outcome, Outcome::ok);
  // The dropped client sees a reset, neither a reply nor an empty one.
  EXPECT_EQ(test::read_until_reset(stalled), "");
}

TEST(Daemon, AClientThatDoesNotReadALargeReplyIsDroppedAfterTheTimeout) {
  // A one-byte request whose reply (32 MiB) is far more than the socket buffers hold, so the
  // server's write must wait for a reader that never comes.
  static const std::string big = test::pattern(32 << 20);
  auto huge_reply = [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    reply.append_ref(request == "big" ? std::string_view(big) : request);
  };
  test::ServerThread server(with(1, 500ms), huge_reply);
  Connection lazy = connect("127.0.0.1", server.port());
  lazy.write_all("big");
  lazy.close_write();
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records()[0];
  EXPECT_EQ(record.outcome, Outcome::timeout) << record.detail;
  EXPECT_EQ(record.detail.rfind("write ", 0), 0U) << record.detail;
  EXPECT_GT(record.bytes_out, 0U);
  EXPECT_LT(record.bytes_out, big.size());
  EXPECT_EQ(request("127.0.0.1", server.port(), "ok"), "ok");
}

TEST(Daemon, OversizedRequestIsClosedUnansweredAndTheDaemonGoesOn) {
  constexpr std::size_t kLimit = 1 << 20;
  test::ServerThread server(with(2, 10s), echo_limited(kLimit));
  Connection big = connect("127.0.0.1", server.port());
  const std::string payload = test::pattern(8 << 20);
  try {
    big.write_all(payload);
    big.close_write();
    EXPECT_EQ(big.read_to_end_string(), "") << "an oversized request must not be echoed";
  } catch (const std::system_error& e) {
    // The server closed with data unread, which resets the connection: also acceptable.
    EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe)
        << e.what();
  }
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records()[0];
  EXPECT_EQ(record.outcome, Outcome::too_large);
  EXPECT_EQ(record.bytes_in, kLimit + 1) << "nothing is buffered past the limit";
  EXPECT_EQ(record.bytes_out, 0U);
  EXPECT_EQ(request("127.0.0.1", server.port(), "small"), kPrefix + "small");
}

TEST(Daemon, RequestsAtTheLimitAndOneBelowAreAnswered) {
  constexpr std::size_t kLimit = 4096;
  const test::ServerThread server(with(1, 10s), echo_limited(kLimit));
  const std::string at(kLimit, 'a');
  EXPECT_EQ(request("127.0.0.1", server.port(), at), kPrefix + at);
  const std::string below(kLimit - 1, 'b');
  EXPECT_EQ(request("127.0.0.1", server.port(), below), kPrefix + below);
}

TEST(Daemon, ZeroMaxBytesMeansNoLimit) {
  const test::ServerThread server(with(1, 10s), echo_limited(0));
  const std::string payload = test::pattern(3 << 20);
  EXPECT_EQ(request("127.0.0.1", server.port(), payload), kPrefix + payload);
}

// The connections' descriptors are what a reset or a closed client could leak here: counted
// as this process's sockets, not all its descriptors. ASan's runtime opens and closes pipes of
// its own in the server's threads (pipe2 then close, seen with strace), so a count of every
// descriptor taken at the wrong moment is off by two (CI: 11 before, 10 after).
int sockets_open() { return test::socket_count(::getpid()); }

TEST(Daemon, AClientResettingMidRequestHurtsNothing) {
  test::ServerThread server(with(2, 10s));
  const int fds_before = sockets_open();
  for (int i = 0; i < 20; ++i) {
    Connection c = connect("127.0.0.1", server.port());
    c.write_all(test::pattern(100000));
    abort_on_close(c);
    c.close();
  }
  ASSERT_TRUE(server.wait_finished(20));
  for (const auto& record : server.records()) EXPECT_EQ(record.outcome, Outcome::reset);
  EXPECT_EQ(sockets_open(), fds_before);
  EXPECT_EQ(request("127.0.0.1", server.port(), "after"), kPrefix + "after");
}

TEST(Daemon, AClientClosingBeforeReadingALargeReplyCausesNoSigpipe) {
  test::ServerThread server(with(2, 10s));
  const int fds_before = sockets_open();
  const std::string payload = test::pattern(8 << 20);
  for (int i = 0; i < 5; ++i) {
    Connection c = connect("127.0.0.1", server.port());
    std::thread writer([&] {
      c.write_all(payload);
      c.close_write();
    });
    writer.join();
    abort_on_close(c);
    c.close();  // the server is, or soon will be, writing an 8 MiB reply to nobody
  }
  ASSERT_TRUE(server.wait_finished(5));
  for (const auto& record : server.records()) {
    EXPECT_EQ(record.outcome, Outcome::reset) << record.detail;
  }
  EXPECT_EQ(sockets_open(), fds_before);
  EXPECT_EQ(request("127.0.0.1", server.port(), "alive"), kPrefix + "alive");
}

TEST(Daemon, SixtyFourConcurrentClientsAreAllAnsweredCorrectly) {
  test::ServerThread server(with(8, 20s));
  constexpr int kClients = 64;
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  std::atomic<int> correct{0};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      const std::string message =
          "client " + std::to_string(i) + " " + test::pattern(std::size_t{1000} * i);
      RequestOptions options;
      options.timeout = 20s;
      try {
        if (request("127.0.0.1", server.port(), message, options) == kPrefix + message) ++correct;
      } catch (const std::system_error&) {  // counted as not correct
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(correct.load(), kClients);
  ASSERT_TRUE(server.wait_finished(kClients));
  EXPECT_EQ(server.server().stats().count(Outcome::ok), static_cast<std::uint64_t>(kClients));
}

TEST(Daemon, StopLetsAConnectionInFlightFinish) {
  test::ServerThread server(with(2, 10s));
  Connection in_flight = occupy_worker(server, 0);
  std::thread stopper([&] { server.stop(); });
  // A new connection is refused once the listener is shut; wait for that as the sign that stop()
  // has begun, while the old connection is still being served.
  const auto deadline = Clock::now() + test::kPatience;
  bool refused = false;
  while (!refused && Clock::now() < deadline) {
    try {
      Connection probe = connect("127.0.0.1", server.port());
      probe.close_write();
      (void)probe.read_to_end_string();
    } catch (const std::system_error&) {
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  in_flight.close_write();
  EXPECT_EQ(in_flight.read_to_end_string(), kPrefix + "partial request, no half-close");
  stopper.join();
}

TEST(Daemon, StopWaitsForAStalledClientOnlyUntilTheTimeout) {
  test::ServerThread server(with(2, 500ms));
  Connection stalled = occupy_worker(server, 0);
  const auto start = Clock::now();
  server.stop();
  EXPECT_LT(Clock::now() - start, 10s);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records()[0].outcome, Outcome::timeout);
}

TEST(Daemon, RunRethrowsAFatalListenerFailure) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  // A listener whose socket is not listening any more makes accept() fail with EINVAL, which is
  // not an interruption the server asked for.
  ASSERT_EQ(::shutdown(listener.fd(), SHUT_RDWR), 0);
  Server server(std::move(listener), echo_protocol(prefix_handler("")), with(2, 1s));
  EXPECT_THROW(server.run(), std::system_error);
}

// Line mode, server side, spoken to byte by byte.
TEST(LineMode, GreetsThenAnswersEachLine) {
  const test::ServerThread server(with(2, 10s), line_protocol(prefix_handler(kPrefix)));
  Connection c = connect("127.0.0.1", server.port());
  c.write_all("one\ntwo\n");
  c.write_all("thr");
  c.write_all("ee\nno newline");
  c.close_write();
  EXPECT_EQ(c.read_to_end_string(), "connect\n" + kPrefix + "one\n" + kPrefix + "two\n" + kPrefix +
                                        "three\n" + kPrefix + "no newline\n");
}

TEST(LineMode, RepliesArriveBeforeTheClientCloses) {
  const test::ServerThread server(with(2, 10s),
                                  line_protocol(prefix_handler("> "), Limits{}, "welcome"));
  Connection c = connect("127.0.0.1", server.port());
  std::string got;
  auto read_line = [&] {
    std::string line;
    char byte = 0;
    while (c.read_some(&byte, 1) == 1 && byte != '\n') line += byte;
    return line;
  };
  EXPECT_EQ(read_line(), "welcome");
  c.write_all("ping\n");
  EXPECT_EQ(read_line(), "> ping");
  c.write_all("pong\n");
  EXPECT_EQ(read_line(), "> pong");
}

TEST(LineMode, ALineOverTheLimitClosesTheConnection) {
  test::ServerThread server(with(2, 10s), line_protocol(prefix_handler(""), Limits{8}));
  Connection c = connect("127.0.0.1", server.port());
  std::string got;
  try {
    c.write_all("12345678\n");  // exactly the limit: answered
    c.write_all("123456789\n");
    c.close_write();
    got = c.read_to_end_string();
    EXPECT_EQ(got, "connect\n12345678\n");
  } catch (const std::system_error& e) {
    // The server closes with the long line unread, which resets the connection; the reset can
    // reach any of the calls above (the half-close then fails with ENOTCONN).
    EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::not_connected ||
                e.code() == std::errc::broken_pipe)
        << e.what();
  }
  EXPECT_EQ(got.find("123456789"), std::string::npos) << "the long line must not be answered";
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records()[0].outcome, Outcome::too_large);
  EXPECT_EQ(request("127.0.0.1", server.port(), "short\n"), "connect\nshort\n");
}

TEST(LineMode, StalledLineClientIsDroppedAfterTheTimeout) {
  test::ServerThread server(with(1, 300ms), line_protocol(prefix_handler(kPrefix)));
  Connection c = connect("127.0.0.1", server.port());
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records()[0].outcome, Outcome::timeout);
  EXPECT_EQ(test::read_until_reset(c), "connect\n");
}

TEST(Logging, OneLinePerConnectionWithPeerBytesDurationAndOutcome) {
  ConnectionRecord record;
  record.peer = resolve("127.0.0.1", 40312).front();
  record.bytes_in = 6;
  record.bytes_out = 16;
  record.duration = std::chrono::microseconds(1234);
  record.outcome = Outcome::ok;
  EXPECT_EQ(format_record(record), "conn peer=127.0.0.1:40312 in=6 out=16 ms=1.234 outcome=ok");
  record.outcome = Outcome::timeout;
  record.detail = "read 127.0.0.1:40312: Connection timed out";
  EXPECT_EQ(format_record(record),
            "conn peer=127.0.0.1:40312 in=6 out=16 ms=1.234 outcome=timeout "
            "error=\"read 127.0.0.1:40312: Connection timed out\"");
}

TEST(Logging, OutcomeNames) {
  EXPECT_EQ(to_string(Outcome::ok), "ok");
  EXPECT_EQ(to_string(Outcome::timeout), "timeout");
  EXPECT_EQ(to_string(Outcome::too_large), "too_large");
  EXPECT_EQ(to_string(Outcome::reset), "reset");
  EXPECT_EQ(to_string(Outcome::refused), "refused");
  EXPECT_EQ(to_string(Outcome::failed), "failed");
  EXPECT_EQ(to_string(Outcome::error), "error");
}

}  // namespace
}  // namespace sockecho
