#include "sockecho/server.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <future>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/datagram_server.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::kPatience;
using test::ServerThread;

using test::kPrefix;

// One echo exchange, bounded so a broken server fails the test instead of hanging it.
std::string ask(std::uint16_t port, std::string_view message, std::string_view host = "127.0.0.1") {
  RequestOptions options;
  options.timeout = kPatience;
  return request(host, port, message, options);
}

std::string every_byte_value() {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  return bytes;
}

// A handler that echoes without a prefix.
Handler echo_handler() { return prefix_handler(std::string()); }

// The document's prefix, spelled out byte by byte so a change to kServerDefaultPrefix (and so to
// the tests' kPrefix) cannot hide.
TEST(Server, DefaultPrefixIsTheDocumentsBytes) {
  EXPECT_EQ(kServerDefaultPrefix, "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ");
  EXPECT_EQ(kServerDefaultPrefix.size(), 10U);
}

TEST(Server, RepliesWithTheDefaultPrefixAndTheMessage) {
  ServerThread server;
  EXPECT_EQ(ask(server.port(), "hello"), std::string(kPrefix) + "hello");
}

TEST(Server, EmptyPrefixIsAPureEcho) {
  ServerThread server({}, echo_handler());
  EXPECT_EQ(ask(server.port(), "hello\n"), "hello\n");
}

TEST(Server, EveryByteValueComesBackIntact) {
  ServerThread server;
  const std::string message = every_byte_value() + every_byte_value();
  ASSERT_EQ(message.size(), 512U);
  ASSERT_EQ(message[0], '\0');
  const std::string reply = ask(server.port(), message);
  EXPECT_EQ(reply, std::string(kPrefix) + message);
}

TEST(Server, EmptyMessageGetsJustThePrefix) {
  ServerThread server;
  EXPECT_EQ(ask(server.port(), ""), kPrefix);
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.bytes_in, 0U);
  EXPECT_EQ(record.bytes_out, kPrefix.size());
  EXPECT_EQ(record.outcome, Outcome::ok);
}

TEST(Server, EmptyMessageWithEmptyPrefixGetsAnEmptyReply) {
  ServerThread server({}, echo_handler());
  EXPECT_EQ(ask(server.port(), ""), "");
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::ok);
  EXPECT_EQ(server.records().at(0).bytes_out, 0U);
}

TEST(Server, MessagesAroundBufferSizesComeBackIntact) {
  ServerThread server;
  // 8 KiB: a common stack buffer size; 64 KiB: the first request buffer's size.
  for (const std::size_t size : {8191U, 8192U, 8193U, 65535U, 65536U, 65537U}) {
    SCOPED_TRACE(size);
    const std::string message = test::pattern(size);
    const std::string reply = ask(server.port(), message);
    ASSERT_EQ(reply.size(), kPrefix.size() + size);
    EXPECT_TRUE(reply == std::string(kPrefix) + message) << "payload corrupted";
  }
}

TEST(Server, TenMebibyteMessageComesBackIntact) {
  ServerThread server;
  const std::string message = test::pattern(std::size_t{10} << 20);
  const std::string reply = ask(server.port(), message);
  ASSERT_EQ(reply.size(), kPrefix.size() + message.size());
  EXPECT_EQ(std::string_view(reply).substr(0, kPrefix.size()), kPrefix);
  EXPECT_TRUE(std::string_view(reply).substr(kPrefix.size()) == message) << "payload corrupted";
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).bytes_in, message.size());
  EXPECT_EQ(server.records().at(0).bytes_out, reply.size());
}

TEST(Server, ServesIpv6Loopback) {
  ServerThread server({}, prefix_handler(std::string(kServerDefaultPrefix)), "::1");
  EXPECT_EQ(server.server().address().family(), AF_INET6);
  EXPECT_EQ(server.server().address().to_string(), "[::1]:" + std::to_string(server.port()));
  EXPECT_EQ(ask(server.port(), "six", "::1"), std::string(kPrefix) + "six");
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.peer.family(), AF_INET6);
  EXPECT_EQ(record.peer.host(), "::1");
}

TEST(Server, IsReachedByTheNameLocalhost) {
  ServerThread server;  // 127.0.0.1 only: a client trying ::1 first must go on to 127.0.0.1
  EXPECT_EQ(ask(server.port(), "by name", "localhost"), std::string(kPrefix) + "by name");
}

TEST(Server, RunsACustomHandler) {
  ServerThread server({}, [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    std::string upper(request);
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    reply.append(upper);
  });
  EXPECT_EQ(ask(server.port(), "Hello, World 42"), "HELLO, WORLD 42");
}

TEST(Server, ThrowingHandlerEndsOnlyItsConnection) {
  ServerThread server({}, [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    if (request == "boom") throw std::runtime_error("handler exploded");
    reply.append_ref(request);
  });
  // The connection is closed unanswered: an empty reply, or a reset.
  try {
    EXPECT_EQ(ask(server.port(), "boom"), "");
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(ask(server.port(), "still here"), "still here");
  ASSERT_TRUE(server.wait_finished(2));

  const std::vector<ConnectionRecord> records = server.records();
  EXPECT_EQ(records.at(0).outcome, Outcome::error);
  EXPECT_NE(records.at(0).detail.find("handler exploded"), std::string::npos)
      << records.at(0).detail;
  EXPECT_EQ(records.at(0).bytes_out, 0U);
  EXPECT_EQ(records.at(1).outcome, Outcome::ok);
  const ServerStats stats = server.server().stats();
  EXPECT_EQ(stats.count(Outcome::error), 1U);
  EXPECT_EQ(stats.count(Outcome::ok), 1U);
  EXPECT_EQ(stats.active, 0U);
}

// server.hpp promises that "an exception it throws ends that connection unanswered": anything
// thrown, not only a std::exception, which once escaped the connection and stopped the server.
TEST(Server, HandlerThrowingANonStandardExceptionEndsOnlyItsConnection) {
  ServerThread server({}, [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    if (request == "boom") throw 42;
    reply.append_ref(request);
  });
  try {
    (void)ask(server.port(), "boom");
  } catch (const std::system_error&) {  // a reset is an acceptable way to go unanswered
  }
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::error);
  EXPECT_EQ(ask(server.port(), "still here"), "still here");
}

TEST(Server, ReplyPiecesComeOutInOrder) {
  static constexpr std::string_view kHeld = "[held]";  // outlives the server
  ServerThread server({}, [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    {
      const std::string temporary = "<copied>";
      reply.append(temporary);  // must be copied: destroyed before the reply is sent
    }
    reply.append_ref(request);
    reply.append_ref(kHeld);
    reply.append("");  // nothing
    reply.append(std::string(3, '!'));
    reply.append_ref(request.substr(0, 1));
  });
  EXPECT_EQ(ask(server.port(), "abc"), "<copied>abc[held]!!!a");
}

TEST(Server, ManyReplyPiecesComeOutInOrder) {
  // One piece per byte: far more pieces than one gathered write takes.
  ServerThread server({}, [](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    for (std::size_t i = 0; i < request.size(); ++i) {
      if (i % 2 == 0) {
        reply.append_ref(request.substr(i, 1));
      } else {
        reply.append(request.substr(i, 1));
      }
    }
  });
  const std::string message = test::pattern(1000);
  EXPECT_TRUE(ask(server.port(), message) == message) << "pieces reordered or lost";
}

TEST(Reply, KeepsPiecesInOrderAndCountsBytes) {
  Reply reply;
  EXPECT_TRUE(reply.empty());
  const std::string held = "ref";
  reply.append("one");
  reply.append_ref(held);
  reply.append("");
  reply.append_ref("");
  reply.append("three");
  EXPECT_FALSE(reply.empty());
  EXPECT_EQ(reply.size(), 11U);
  std::vector<std::string_view> pieces{"stale"};
  reply.pieces(pieces);
  ASSERT_EQ(pieces.size(), 3U);
  EXPECT_EQ(pieces[0], "one");
  EXPECT_EQ(pieces[1], "ref");
  EXPECT_EQ(pieces[1].data(), held.data());  // not copied
  EXPECT_EQ(pieces[2], "three");

  reply.clear();
  EXPECT_TRUE(reply.empty());
  EXPECT_EQ(reply.size(), 0U);
  reply.pieces(pieces);
  EXPECT_TRUE(pieces.empty());
}

TEST(Server, RecordsEachConnection) {
  ServerThread server;
  const auto before = std::chrono::steady_clock::now();
  Connection connection = connect("127.0.0.1", server.port(), kPatience);
  connection.set_timeout(kPatience);
  const Address local = Address::local_of(connection.fd());
  connection.write_all("hello");
  connection.close_write();
  EXPECT_EQ(connection.read_to_end_string(), std::string(kPrefix) + "hello");
  ASSERT_TRUE(server.wait_finished(1));
  const auto around = std::chrono::steady_clock::now() - before;

  const std::vector<ConnectionRecord> records = server.records();
  ASSERT_EQ(records.size(), 1U);
  const ConnectionRecord& record = records[0];
  EXPECT_EQ(record.peer, local);
  EXPECT_EQ(record.peer.to_string(), "127.0.0.1:" + std::to_string(local.port()));
  EXPECT_EQ(record.bytes_in, 5U);
  EXPECT_EQ(record.bytes_out, kPrefix.size() + 5);
  EXPECT_EQ(record.outcome, Outcome::ok);
  EXPECT_TRUE(record.detail.empty()) << record.detail;
  // From accept to close: some time, within what the client saw from connect to the record.
  EXPECT_GT(record.duration.count(), 0);
  EXPECT_LE(record.duration, around);
  EXPECT_EQ(format_record(record).rfind("conn peer=" + local.to_string() + " in=5 out=15 ", 0), 0U)
      << format_record(record);
}

TEST(Server, RejectsZeroWorkers) {
  ServerOptions options;
  options.workers = 0;
  EXPECT_THROW(Server(Listener::bind("127.0.0.1", 0), echo_protocol(echo_handler()), options),
               std::invalid_argument);
}

TEST(Server, StopBeforeRunMakesRunReturnPromptly) {
  Server server(Listener::bind("127.0.0.1", 0), echo_protocol(echo_handler()));
  server.stop();
  server.stop();  // any number of times
  const auto start = std::chrono::steady_clock::now();
  server.run();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(server.stats().accepted, 0U);
}

TEST(Server, StopAfterAnnouncesAtOnceAndServesUntilTheDelayIsOver) {
  Server server(Listener::bind("127.0.0.1", 0), echo_protocol(echo_handler()));
  const std::uint16_t port = server.address().port();
  std::thread running([&] { server.run(); });
  EXPECT_FALSE(server.stopping());
  const auto start = std::chrono::steady_clock::now();
  server.stop_after(600ms);
  EXPECT_TRUE(server.stopping()) << "announced at once";
  EXPECT_EQ(request("127.0.0.1", port, "late"), "late") << "still served during the delay";
  running.join();  // run() returns by itself once the delay is over
  EXPECT_GE(std::chrono::steady_clock::now() - start, 600ms);
  EXPECT_THROW((void)request("127.0.0.1", port, "after"), std::system_error);
  EXPECT_EQ(server.stats().count(Outcome::ok), 1U);
}

TEST(Server, AStopDuringTheDelayEndsItEarly) {
  test::ServerThread server;
  server.server().stop_after(std::chrono::seconds(60));
  const auto start = Clock::now();
  server.server().stop();
  server.stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
  server.server().stop_after(std::chrono::seconds(60));  // once stopped: nothing more happens
}

TEST(Server, AServerAnnouncedToStopButNeverRunGoesAwayAtOnce) {
  // The delayed stop's thread is ended by the destructor, without waiting out the delay and
  // without calling into the part of the server already destroyed.
  const auto start = Clock::now();
  {
    Server server(Listener::bind("127.0.0.1", 0), echo_protocol(echo_handler()));
    server.stop_after(std::chrono::seconds(60));
    EXPECT_TRUE(server.stopping());
  }
  {
    DatagramServer server(DatagramSocket::bind("127.0.0.1", 0), prefix_handler(""));
    server.stop_after(std::chrono::seconds(60));
  }
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
}

TEST(Server, CountsConnectionsAndOutcomes) {
  ServerThread server(ServerOptions{}, echo_protocol(echo_handler(), Limits{4}));
  const ServerStats fresh = server.server().stats();
  EXPECT_EQ(fresh.accepted, 0U);
  EXPECT_EQ(fresh.active, 0U);
  EXPECT_EQ(fresh.count(Outcome::ok), 0U);

  EXPECT_EQ(ask(server.port(), "1234"), "1234");  // exactly max_bytes is fine
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(ask(server.port(), ""), "");
  ASSERT_TRUE(server.wait_finished(2));
  try {
    EXPECT_EQ(ask(server.port(), "12345"), "");  // over the limit: closed unanswered
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
  ASSERT_TRUE(server.wait_finished(3));

  const ServerStats stats = server.server().stats();
  EXPECT_EQ(stats.accepted, 3U);
  EXPECT_EQ(stats.active, 0U);
  EXPECT_EQ(stats.count(Outcome::ok), 2U);
  EXPECT_EQ(stats.count(Outcome::too_large), 1U);
  EXPECT_EQ(stats.count(Outcome::timeout), 0U);
  EXPECT_EQ(stats.count(Outcome::reset), 0U);
  EXPECT_EQ(stats.count(Outcome::error), 0U);
  EXPECT_EQ(server.records().at(2).outcome, Outcome::too_large);
}

TEST(Server, CountsActiveConnections) {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ServerThread server({}, [&entered, released](const Request& message, Reply& reply) {
    const std::string_view request = message.bytes();
    entered.set_value();
    released.wait();
    reply.append_ref(request);
  });
  // Whatever fails below, the handler must be let go before the server is stopped and joined.
  struct Release {
    std::promise<void>& promise;
    bool done = false;
    void now() {
      if (!done) promise.set_value();
      done = true;
    }
    ~Release() { now(); }
  } release_guard{release};
  Connection connection = connect("127.0.0.1", server.port(), kPatience);
  connection.set_timeout(kPatience);
  connection.write_all("wait");
  connection.close_write();
  ASSERT_EQ(entered.get_future().wait_for(kPatience), std::future_status::ready);
  const ServerStats busy = server.server().stats();
  EXPECT_EQ(busy.accepted, 1U);
  EXPECT_EQ(busy.active, 1U);
  EXPECT_EQ(busy.count(Outcome::ok), 0U);
  release_guard.now();
  EXPECT_EQ(connection.read_to_end_string(), "wait");
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.server().stats().active, 0U);
  EXPECT_EQ(server.server().stats().count(Outcome::ok), 1U);
}

TEST(Server, SilentClientTimesOut) {
  ServerOptions options;
  options.timeout = 100ms;
  ServerThread server(options);
  Connection connection = connect("127.0.0.1", server.port(), kPatience);
  connection.set_timeout(kPatience);
  // Never half-close: the server must give up, answering nothing, with a reset.
  EXPECT_EQ(test::read_until_reset(connection), "");
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::timeout);
  EXPECT_EQ(server.server().stats().count(Outcome::timeout), 1U);
  EXPECT_EQ(ask(server.port(), "next"), std::string(kPrefix) + "next");
}

TEST(Server, ServesConcurrentClients) {
  ServerThread server;
  constexpr int kClients = 8;
  constexpr int kRequests = 10;
  std::vector<std::future<int>> results;
  results.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    results.push_back(std::async(std::launch::async, [&server, c] {
      int good = 0;
      for (int r = 0; r < kRequests; ++r) {
        const std::string message = "client " + std::to_string(c) + " request " + std::to_string(r);
        if (ask(server.port(), message) == std::string(kPrefix) + message) ++good;
      }
      return good;
    }));
  }
  for (auto& result : results) EXPECT_EQ(result.get(), kRequests);
  constexpr std::uint64_t kTotal = std::uint64_t{kClients} * kRequests;
  ASSERT_TRUE(server.wait_finished(kTotal));
  EXPECT_EQ(server.server().stats().accepted, kTotal);
  EXPECT_EQ(server.server().stats().count(Outcome::ok), kTotal);
}

}  // namespace
}  // namespace sockecho

namespace sockecho {
namespace {

// Runs a server with `options` on a loopback port until `body(port)` returns, then stops it.
// run() must return normally.
template <typename Body>
void serve_while(ServerOptions options, Body body) {
  Server server(Listener::bind("127.0.0.1", 0), echo_protocol(prefix_handler("")),
                std::move(options));
  std::thread runner([&] { EXPECT_NO_THROW(server.run()); });
  body(server.address().port());
  server.stop();
  runner.join();
}

TEST(ServerObservers, AnOnConnectionCallbackThatThrowsIsContainedAndLogged) {
  test::Pipe log = test::make_pipe();
  ServerOptions options;
  options.workers = 1;
  options.log = Logger(log.write.get(), LogLevel::quiet);
  std::atomic<int> calls{0};
  options.on_connection = [&calls](const ConnectionRecord& /*record*/) {
    ++calls;
    throw std::runtime_error("observer failed");
  };
  serve_while(options, [](std::uint16_t port) {
    EXPECT_EQ(request("127.0.0.1", port, "a"), "a");
    EXPECT_EQ(request("127.0.0.1", port, "b"), "b") << "the server goes on after the throw";
  });
  EXPECT_EQ(calls.load(), 2);
  log.write.reset();
  const std::string text = test::read_all(log.read.get());
  std::size_t lines = 0;
  for (std::size_t at = text.find("on_connection failed: observer failed"); at != std::string::npos;
       at = text.find("on_connection failed: observer failed", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 2U) << text;
}

TEST(ServerLog, StoppingIsAlwaysLoggedBeforeTheStopLine) {
  // The stop line comes from run() once the workers are woken, the stopping line from stop():
  // stop() logs first, then wakes them. Repeated, as the wrong order was a race.
  for (int round = 0; round < 20; ++round) {
    test::Pipe log = test::make_pipe();
    ServerOptions options;
    options.workers = 4;
    options.log = Logger(log.write.get(), LogLevel::normal);
    serve_while(options, [](std::uint16_t /*port*/) {});
    log.write.reset();
    const std::string text = test::read_all(log.read.get());
    const std::size_t stopping = text.find(" stopping: no new connections");
    const std::size_t stop = text.find(" stop accepted=0 ");
    ASSERT_NE(stopping, std::string::npos) << text;
    ASSERT_NE(stop, std::string::npos) << text;
    EXPECT_LT(stopping, stop) << "round " << round << ":\n" << text;
  }
}

}  // namespace
}  // namespace sockecho

namespace sockecho {
namespace {

TEST(ServerStatsLine, NamesEveryCounter) {
  ServerStats stats;
  stats.accepted = 5;
  stats.active = 1;
  stats.outcomes[static_cast<std::size_t>(Outcome::ok)] = 3;
  stats.outcomes[static_cast<std::size_t>(Outcome::refused)] = 1;
  stats.bytes_in = 12;
  stats.bytes_out = 32;
  EXPECT_EQ(format_stats(stats),
            "accepted=5 active=1 ok=3 timeout=0 too_large=0 reset=0 refused=1 failed=0 error=0 "
            "bytes_in=12 bytes_out=32");
}

TEST(ServerStatsLine, BytesOfFinishedConnectionsAreCounted) {
  test::ServerThread server(ServerOptions{}, echo_protocol(prefix_handler("> ")));
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), "> hello");
  ASSERT_TRUE(server.wait_finished(1));
  const ServerStats stats = server.server().stats();
  EXPECT_EQ(stats.bytes_in, 5U);
  EXPECT_EQ(stats.bytes_out, 7U);
}

}  // namespace
}  // namespace sockecho

namespace sockecho {
namespace {

// The workers' count, once it has settled on `expected` (bounded by the test's patience).
std::uint64_t workers_settle(Server& server, std::uint64_t expected) {
  const auto until = std::chrono::steady_clock::now() + test::kPatience;
  std::uint64_t now = server.stats().workers;
  while (now != expected && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(10ms);  // ok-sleep: polling a counter, bounded by kPatience
    now = server.stats().workers;
  }
  return now;
}

// A protocol of a library user's own that declares no framing: it reads its request itself, so
// it holds a worker for its whole connection.
class ReadsItself final : public Protocol {
 public:
  void serve(Connection& connection, Workspace& workspace) override {
    std::string request = connection.read_to_end_string();
    workspace.reply.append(request);
    workspace.send(connection);
  }
  [[nodiscard]] std::string describe() const override { return "mode=reads-itself"; }
};

TEST(WorkersOnDemand, StartAsConnectionsNeedThemAndRetireWhenIdle) {
  ServerOptions options;
  options.workers = 8;
  // Also the idle period after which an extra worker retires (spelled out for cppcheck 2.10).
  options.timeout = std::chrono::seconds(1);
  // A protocol that holds its worker for the whole connection: with one that declares its
  // framing, an incomplete request leaves its worker for the waiting room after the grace, and
  // how many workers five connections take would depend on how fast the test connects them.
  ServerThread server(options, std::make_shared<ReadsItself>());
  EXPECT_EQ(workers_settle(server.server(), 1), 1U) << "one worker while nothing is served";
  {
    // Five connections held open: five busy workers and one more waiting in accept().
    std::vector<Connection> held;
    held.reserve(5);
    for (int i = 0; i < 5; ++i) {
      held.push_back(connect("127.0.0.1", server.port(), kPatience));
      held.back().write_all("x");
    }
    EXPECT_EQ(workers_settle(server.server(), 6), 6U);
    // The sixth is served at once by the waiting worker.
    EXPECT_EQ(request("127.0.0.1", server.port(), "now"), "now");
  }
  ASSERT_TRUE(server.wait_finished(6));
  // The held connections closed; the extra workers retire after an idle period.
  EXPECT_EQ(workers_settle(server.server(), 1), 1U);
  EXPECT_EQ(request("127.0.0.1", server.port(), "after"), "after");
}

// Polls a counter of the server until it is `want`, within kPatience; returns what it is.
template <typename Counter>
std::uint64_t counter_settles(Counter counter, std::uint64_t want) {
  const auto until = std::chrono::steady_clock::now() + test::kPatience;
  std::uint64_t now = counter();
  while (now != want && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(10ms);  // ok-sleep: polling a counter, bounded by kPatience
    now = counter();
  }
  return now;
}

TEST(WorkersOnDemand, NeverMoreThanTheLimit) {
  ServerOptions options;
  options.workers = 3;
  options.timeout = std::chrono::seconds(10);  // spelled out for cppcheck 2.10
  ServerThread server(options, std::make_shared<ReadsItself>());
  std::vector<Connection> held;
  held.reserve(6);
  for (int i = 0; i < 6; ++i) held.push_back(connect("127.0.0.1", server.port(), kPatience));
  EXPECT_EQ(workers_settle(server.server(), 3), 3U);
  EXPECT_EQ(counter_settles([&] { return server.server().stats().active; }, 3), 3U)
      << "three served, three in the backlog";
  EXPECT_EQ(server.server().stats().workers, 3U);
  EXPECT_EQ(server.server().waiting(), 0U) << "a protocol without framing never waits";
}

TEST(WaitingRoom, ConnectionsWithoutACompleteRequestHoldNoWorker) {
  ServerOptions options;
  options.workers = 3;
  options.timeout = std::chrono::seconds(10);  // spelled out for cppcheck 2.10
  ServerThread server(options);
  std::vector<Connection> held;
  held.reserve(30);
  for (int i = 0; i < 30; ++i) {
    held.push_back(connect("127.0.0.1", server.port(), kPatience));
    held.back().write_all("part " + std::to_string(i));
  }
  Server& s = server.server();
  EXPECT_EQ(counter_settles([&] { return s.waiting(); }, 30), 30U) << "all thirty wait";
  EXPECT_EQ(s.stats().active, 30U);
  EXPECT_LE(s.stats().workers, 3U);
  // Ten times the workers wait, and a whole request is still answered at once.
  EXPECT_EQ(request("127.0.0.1", server.port(), "now"), kPrefix + "now");
  // Each held one, completed, is answered by a worker: in any order, all of them.
  for (std::size_t i = 0; i < held.size(); i += 2) held[i].close_write();
  for (std::size_t i = 0; i < held.size(); i += 2) {
    EXPECT_EQ(held[i].read_to_end_string(), kPrefix + "part " + std::to_string(i));
  }
  EXPECT_EQ(counter_settles([&] { return s.waiting(); }, 15), 15U);
  // The others reset before their requests end: each counted once, a reset.
  for (std::size_t i = 1; i < held.size(); i += 2) held[i].abort();
  EXPECT_EQ(counter_settles([&] { return s.stats().active; }, 0), 0U);
  EXPECT_EQ(s.waiting(), 0U);
  EXPECT_EQ(s.stats().count(Outcome::ok), 16U);
  EXPECT_EQ(s.stats().count(Outcome::reset), 15U);
}

TEST(WaitingRoom, OneWorkerStaysTheSerialLoop) {
  ServerOptions options;
  options.workers = 1;
  options.timeout = std::chrono::seconds(10);  // spelled out for cppcheck 2.10
  ServerThread server(options);
  Connection first = connect("127.0.0.1", server.port(), kPatience);
  first.write_all("first");
  // The one worker holds the first connection until it ends: the second waits in the backlog.
  Connection second = connect("127.0.0.1", server.port(), kPatience);
  second.write_all("second");
  second.close_write();
  EXPECT_EQ(counter_settles([&] { return server.server().stats().active; }, 1), 1U);
  EXPECT_EQ(server.server().waiting(), 0U);
  char byte = 0;
  second.set_timeout(200ms);
  EXPECT_THROW((void)second.read_some(&byte, 1), std::system_error) << "answered out of turn";
  first.close_write();
  EXPECT_EQ(first.read_to_end_string(), kPrefix + "first");
  second.set_timeout(kPatience);
  EXPECT_EQ(second.read_to_end_string(), kPrefix + "second");
}

}  // namespace
}  // namespace sockecho
