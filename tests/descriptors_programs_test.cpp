// sockecho-server started with descriptors 0, 1 and 2 closed, as some supervisors start daemons:
// no socket may take those numbers, or log lines would be written into a client's connection.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::kPrefix;

// Where a process's descriptor points ("/dev/null", "socket:[123]"); "" if it is closed.
std::string target_of(pid_t pid, int fd) {
  std::error_code closed;
  const std::filesystem::path path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  return std::filesystem::read_symlink(path, closed).native();
}

TEST(DescriptorsProgram, StartedWithZeroOneAndTwoClosedNoClientGetsLogText) {
  // A supervisor that closes stdio passes the socket itself: stdout is closed, so there is no
  // ready line to read, and the socket already listens before the server starts.
  const Listener socket_unit = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = socket_unit.address().port();
  test::SpawnOptions options = test::passing({socket_unit.fd()});
  options.closed = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};
  test::Child server(test::activated({"--workers", "4", "--verbose"}), options);

  constexpr int kRounds = 5;
  constexpr int kClients = 4;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<Connection> clients;
    clients.reserve(kClients);
    for (int c = 0; c < kClients; ++c) {
      clients.push_back(connect("127.0.0.1", port));
      clients.back().write_all("round " + std::to_string(round) + " client " + std::to_string(c));
    }
    // Every connection accepted and held open at once, each logged (--verbose) as it opens.
    const auto deadline = Clock::now() + test::kPatience;
    while (test::socket_count(server.pid()) < 1 + kClients && Clock::now() < deadline) {
      std::this_thread::yield();
    }
    ASSERT_EQ(test::socket_count(server.pid()), 1 + kClients);
    for (int fd = 0; fd <= 2; ++fd) EXPECT_EQ(target_of(server.pid(), fd), "/dev/null") << fd;
    // The open lines are written up to 50 ms late (the log's batching): held past that, a
    // connection on descriptor 2 would have them in front of its reply.
    std::this_thread::sleep_for(150ms);  // ok-sleep: the log batching it must outlast
    for (int c = 0; c < kClients; ++c) {
      clients[c].close_write();
      EXPECT_EQ(clients[c].read_to_end_string(),
                kPrefix + "round " + std::to_string(round) + " client " + std::to_string(c));
    }
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
  EXPECT_EQ(server.out(), "");
  EXPECT_EQ(server.err(), "");
}

}  // namespace
}  // namespace sockecho
