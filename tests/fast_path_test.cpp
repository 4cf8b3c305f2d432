// The server's fast paths keep the promises of the slow ones: connections whose limits cost no
// system call still time out, reused large buffers still hold the right bytes and are
// freed when the server goes idle, and the allocation-free log line reads as before.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::ServerProcess;

using test::kPrefix;

// AddressSanitizer keeps freed memory in quarantine, so RSS says nothing about freeing there.
using test::kAddressSanitized;

using test::peak_rss_kib;

// Connections keep their limits in their Deadline, not in socket options: accepting one costs
// no setsockopt, and the limits mean the same whatever listener the connection came from.
TEST(ConnectionLimits, AcceptedConnectionsAreNonBlockingWithNoLimitsOfTheirOwn) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  Connection client = connect("127.0.0.1", listener.address().port(), test::kPatience);
  std::optional<Connection> accepted = listener.accept();
  ASSERT_TRUE(accepted && accepted->is_open());
  EXPECT_EQ(accepted->timeout().count(), 0);
  EXPECT_NE(::fcntl(accepted->fd(), F_GETFL) & O_NONBLOCK, 0);
  // A limit set afterwards is honoured by a read that would otherwise wait forever.
  accepted->set_timeout(150ms);
  std::array<char, 16> data{};
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)accepted->read_some(data.data(), data.size());
    ADD_FAILURE() << "read from a silent client returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
}

TEST(ConnectionLimits, AcceptOrIdleReturnsAClosedConnectionWhenNothingArrives) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  listener.set_idle_timeout(50ms);
  EXPECT_EQ(listener.idle_timeout(), 50ms);
  std::optional<Connection> idle = listener.accept_or_idle();
  ASSERT_TRUE(idle.has_value()) << "not interrupted";
  EXPECT_FALSE(idle->is_open());
  // accept() itself goes on waiting through idle periods and still takes the next connection.
  std::thread later([port = listener.address().port()] {
    Connection c = connect("127.0.0.1", port, test::kPatience);
    c.close_write();
  });
  std::optional<Connection> accepted = listener.accept();
  later.join();
  ASSERT_TRUE(accepted);
  EXPECT_TRUE(accepted->is_open());
  // The idle timeout of the listening socket is no limit on its connections.
  EXPECT_EQ(accepted->timeout().count(), 0);
  listener.interrupt();
  EXPECT_FALSE(listener.accept_or_idle().has_value()) << "interrupted";
}

TEST(ConnectionLimits, TheProgramTimesOutSilentClients) {
  ServerProcess server({"--timeout", "0.2"});
  Connection silent = connect("127.0.0.1", server.port(), test::kPatience);
  silent.set_timeout(test::kPatience);
  EXPECT_EQ(test::read_until_reset(silent), "");
  const auto line = server.wait_stderr(" outcome=timeout");
  ASSERT_TRUE(line) << server.err();
  EXPECT_NE(line->find(" in=0 out=0 "), std::string::npos) << *line;
}

TEST(ConnectionLimits, AServerAppliesItsTimeoutToALibraryUsersListener) {
  // A listener bound with no options at all, as docs/library.md's example does: the server's own
  // timeout still applies to every connection.
  ServerOptions options;
  options.timeout = 100ms;
  std::vector<ConnectionRecord> records;
  std::mutex mutex;
  std::condition_variable done;
  options.on_connection = [&](const ConnectionRecord& record) {
    const std::lock_guard<std::mutex> lock(mutex);
    records.push_back(record);
    done.notify_all();
  };
  Server server(Listener::bind("127.0.0.1", 0), echo_protocol(prefix_handler(kPrefix)), options);
  std::thread runner([&] { server.run(); });
  Connection silent = connect("127.0.0.1", server.address().port(), test::kPatience);
  {
    std::unique_lock<std::mutex> lock(mutex);
    EXPECT_TRUE(done.wait_for(lock, test::kPatience, [&] { return !records.empty(); }));
    if (!records.empty()) {
      EXPECT_EQ(records.front().outcome, Outcome::timeout);
    }
  }
  server.stop();
  runner.join();
}

TEST(SpareBuffers, LargeRequestsOneAfterAnotherGetTheirOwnBytesBack) {
  // The second and third requests reuse the first one's buffer: a shorter request must not see
  // the tail of a longer one, and a longer one must grow it.
  ServerProcess server({"--workers", "2", "--quiet"});
  RequestOptions patient;
  patient.timeout = test::kPatience;
  for (const std::size_t size :
       {std::size_t{6} << 20, std::size_t{3} << 20, std::size_t{9} << 20}) {
    std::string payload = test::pattern(size);
    payload[0] = static_cast<char>('a' + size % 7);  // differs from request to request
    const std::string reply = request("127.0.0.1", server.port(), payload, patient);
    ASSERT_EQ(reply.size(), kPrefix.size() + size);
    EXPECT_TRUE(reply == kPrefix + payload) << "reply to a " << size << "-byte request differs";
  }
  EXPECT_EQ(request("127.0.0.1", server.port(), "small", patient), kPrefix + "small");
}

TEST(SpareBuffers, TheWaitingRoomKeepsItsLargeBuffersChargedForTheNextRequestsThenFreesThem) {
  // With more than one worker a large request is read in the waiting room. Its buffer (and the
  // rest of a reply the client did not take at once) is kept, still charged to the budget, for
  // the next large request, which would otherwise fault fresh pages in: six requests of 8 MiB
  // in turn hold one buffer of 16 MiB and one reply's rest, not six of each. Once the server
  // has been idle for its timeout they are freed.
  auto budget = std::make_shared<MemoryBudget>(std::size_t{512} << 20);
  Limits limits;
  limits.budget = budget;
  ServerOptions options;
  options.workers = 2;
  options.timeout = 1s;
  Server server(Listener::bind("127.0.0.1", 0), echo_protocol(prefix_handler(kPrefix), limits),
                options);
  std::thread runner([&] { server.run(); });
  RequestOptions patient;
  patient.timeout = test::kPatience;
  std::string payload = test::pattern(std::size_t{8} << 20);
  for (int i = 0; i < 6; ++i) {
    payload[0] = static_cast<char>('a' + i);
    const std::string reply = request("127.0.0.1", server.address().port(), payload, patient);
    EXPECT_TRUE(reply == std::string(kPrefix) + payload) << i;
    EXPECT_LE(budget->charged(), std::size_t{32} << 20) << i;
  }
  EXPECT_GE(budget->charged(), std::size_t{16} << 20) << "the request buffer is kept";
  EXPECT_TRUE(test::eventually([&] { return budget->charged() == 0; })) << budget->charged();
  server.stop();
  runner.join();
}

TEST(SpareBuffers, AreFreedWhenTheServerHasBeenIdleForATimeout) {
  // Spares kept by workers that read their requests themselves (one worker here: with more, a
  // large request is read in the waiting room, which keeps spares of its own: the test above).
  ServerProcess server({"--workers", "1", "--timeout", "0.3", "--verbose"});
  RequestOptions patient;
  patient.timeout = test::kPatience;
  const std::string payload = test::pattern(std::size_t{8} << 20);
  std::vector<std::thread> clients;
  clients.reserve(3);
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&] {
      EXPECT_EQ(request("127.0.0.1", server.port(), payload, patient).size(),
                kPrefix.size() + payload.size());
    });
  }
  for (std::thread& client : clients) client.join();
  // The peak, not the current RSS: a worker that saw no connection may already have gone idle.
  const long busy_kib = peak_rss_kib(server.pid());
  const auto freed = server.wait_stderr(" idle: freed ");
  ASSERT_TRUE(freed) << server.err();
  // Three 8 MiB requests one after another: one buffer of 16 MiB, kept and reused.
  EXPECT_NE(freed->find(" spare buffers, "), std::string::npos) << *freed;
  const long idle_kib = test::rss_kib(server.pid());
  if (!kAddressSanitized) {
    EXPECT_LT(idle_kib, busy_kib - 6L * 1024)
        << "peak " << busy_kib << ", idle " << idle_kib << " KiB";
  }
  EXPECT_EQ(request("127.0.0.1", server.port(), "after", patient), kPrefix + "after");
}

TEST(SpareBuffers, WithoutATimeoutLargeBuffersAreFreedAtOnce) {
  ServerProcess server({"--workers", "1", "--timeout", "0", "--quiet"});
  const long before_kib = test::rss_kib(server.pid());
  RequestOptions patient;
  patient.timeout = test::kPatience;
  const std::string payload = test::pattern(std::size_t{16} << 20);
  EXPECT_EQ(request("127.0.0.1", server.port(), payload, patient).size(),
            kPrefix.size() + payload.size());
  // The reply to a later request comes after the large buffer was freed.
  EXPECT_EQ(request("127.0.0.1", server.port(), "x", patient), kPrefix + "x");
  const long after_kib = test::rss_kib(server.pid());
  if (!kAddressSanitized) {
    EXPECT_LT(after_kib, before_kib + 4L * 1024) << "RSS " << before_kib << " -> " << after_kib;
  }
}

TEST(LogLine, FormatIsUnchangedForEveryKindOfRecord) {
  ConnectionRecord record;
  record.peer = resolve("::1", 443).front();
  record.bytes_in = 18446744073709551615ULL;
  record.bytes_out = 0;
  record.duration = std::chrono::microseconds(1'000'007);
  record.outcome = Outcome::reset;
  EXPECT_EQ(format_record(record),
            "conn peer=[::1]:443 in=18446744073709551615 out=0 ms=1000.007 outcome=reset");
  record.peer = resolve("255.255.255.255", 0).front();
  record.duration = std::chrono::microseconds(0);
  record.outcome = Outcome::ok;
  EXPECT_EQ(format_record(record),
            "conn peer=255.255.255.255:0 in=18446744073709551615 out=0 ms=0.000 outcome=ok");
  record.peer = resolve("0.0.0.0", 7).front();
  EXPECT_EQ(format_record(record).substr(0, 20), "conn peer=0.0.0.0:7 ");
  record.peer = resolve("10.1.2.3", 65535).front();
  record.duration = std::chrono::microseconds(5);
  record.outcome = Outcome::error;
  record.detail = std::string(600, 'x');  // longer than the stack buffer
  EXPECT_EQ(format_record(record),
            "conn peer=10.1.2.3:65535 in=18446744073709551615 out=0 "
            "ms=0.005 outcome=error error=\"" +
                std::string(600, 'x') + "\"");
}

// What a Logger writes for a record, read back through a pipe.
std::string logged(const ConnectionRecord& record) {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category());
  const Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  Logger(write_end.get(), LogLevel::normal).connection(record);
  write_end.reset();
  std::string out;
  std::array<char, 4096> chunk{};
  for (;;) {
    const ssize_t n = ::read(read_end.get(), chunk.data(), chunk.size());
    if (n <= 0) return out;
    out.append(chunk.data(), static_cast<std::size_t>(n));
  }
}

TEST(LogLine, LoggerWritesTimestampRecordAndNewlineAsOneLine) {
  ConnectionRecord record;
  record.peer = resolve("127.0.0.1", 40312).front();
  record.bytes_in = 6;
  record.bytes_out = 16;
  record.duration = std::chrono::microseconds(210);
  for (const std::size_t detail : {std::size_t{0}, std::size_t{30}, std::size_t{2000}}) {
    record.detail = std::string(detail, 'e');
    const std::string line = logged(record);
    // "2026-11-25T21:41:10.123Z " then the record, then '\n', and nothing else.
    ASSERT_GT(line.size(), 25U);
    EXPECT_EQ(line[4], '-');
    EXPECT_EQ(line[10], 'T');
    EXPECT_EQ(line[19], '.');
    EXPECT_EQ(line.substr(23, 2), "Z ");
    EXPECT_EQ(line.substr(25), format_record(record) + "\n") << "detail of " << detail;
  }
}

}  // namespace
}  // namespace sockecho
