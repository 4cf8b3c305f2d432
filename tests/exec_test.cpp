// exec_handler: a program per request behind the echo protocol, on a real server and sockets.
#include "sockecho/exec.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

ServerOptions workers(unsigned count) {
  ServerOptions options;
  options.workers = count;
  options.timeout = 10s;
  return options;
}

std::shared_ptr<Protocol> exec_of(std::vector<std::string> argv, ProgramLimits limits = {},
                                  std::string prefix = "") {
  ExecOptions options;
  options.argv = std::move(argv);
  options.limits = std::move(limits);
  options.prefix = std::move(prefix);
  return echo_protocol(exec_handler(std::move(options)));
}

// Sends a request and reads to the end; std::nullopt when the server reset the connection.
std::optional<std::string> ask(std::uint16_t port, const std::string& text) {
  Connection c = connect("127.0.0.1", port, test::kPatience);
  c.set_timeout(test::kPatience);
  c.write_all(text);
  c.close_write();
  std::optional<std::string> reset = test::read_until_reset(c);
  if (reset) return std::nullopt;
  return std::string("answered");
}

TEST(Exec, TheReplyIsThePrefixAndTheProgramsStdout) {
  test::ServerThread server(workers(2), exec_of({"tr", "a-z", "A-Z"}, {}, "> "));
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), "> HELLO");
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::ok);
}

TEST(Exec, TheEnvironmentNamesTheSocketsAddresses) {
  test::ServerThread server(
      workers(2), exec_of({"sh", "-c",
                           "echo \"$PROTO $TCPREMOTEIP $TCPREMOTEPORT $TCPLOCALIP $TCPLOCALPORT "
                           "$REMOTE_ADDR $REMOTE_PORT\""}));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  c.set_timeout(test::kPatience);
  const Address mine = c.local();
  c.close_write();
  const std::string port = std::to_string(mine.port());
  EXPECT_EQ(c.read_to_end_string(), "TCP 127.0.0.1 " + port + " 127.0.0.1 " +
                                        std::to_string(server.port()) + " 127.0.0.1 " + port +
                                        "\n");
}

TEST(Exec, ANonZeroExitIsAResetLoggedWithItsStatus) {
  test::ServerThread server(workers(2), exec_of({"sh", "-c", "cat >/dev/null; exit 3"}));
  EXPECT_EQ(ask(server.port(), "x"), std::nullopt);
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::failed);
  EXPECT_EQ(record.fields, "exit=3");
  EXPECT_NE(format_record(record).find(" outcome=failed exit=3 "), std::string::npos)
      << format_record(record);
}

TEST(Exec, AKilledProgramIsAResetLoggedWithItsSignal) {
  test::ServerThread server(workers(2), exec_of({"sh", "-c", "kill -TERM $$"}));
  EXPECT_EQ(ask(server.port(), "x"), std::nullopt);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::failed);
  EXPECT_EQ(server.records().at(0).fields, "signal=SIGTERM");
}

TEST(Exec, OverTheRuntimeLimitIsATimeoutAndAReset) {
  ProgramLimits limits;
  limits.timeout = 200ms;
  test::ServerThread server(workers(2), exec_of({"tail", "-f", "/dev/null"}, limits));
  EXPECT_EQ(ask(server.port(), "x"), std::nullopt);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::timeout);
}

TEST(Exec, OverTheOutputLimitIsTooLargeAndAReset) {
  ProgramLimits limits;
  limits.max_output = 1024;
  test::ServerThread server(workers(2), exec_of({"yes"}, limits));
  EXPECT_EQ(ask(server.port(), "x"), std::nullopt);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::too_large);
}

TEST(Exec, AtMostTheWorkersRunAtOnce) {
  // Each run appends "+" to DIR/log as it starts, says so through the FIFO DIR/started, waits
  // for the gate and appends "-" as it ends (appends are atomic), so the log's running sum is how
  // many ran at once. The gate opens once four have started: four overlap for certain, and a
  // fifth could only start by breaking the limit.
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  const std::string fifo = dir.file("started");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const Fd started(::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));  // NOLINT: open(2)
  ASSERT_TRUE(started);
  test::ServerThread server(
      workers(4),
      exec_of(
          {"sh", "-c",
           R"(echo + >>"$0/log"; echo + >"$0/started"; flock -s "$0/gate" true; echo - >>"$0/log")",
           dir.path()}));
  std::vector<std::thread> clients;
  clients.reserve(8);
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] { (void)request("127.0.0.1", server.port(), "x"); });
  }
  std::size_t seen = 0;
  const auto give_up = std::chrono::steady_clock::now() + test::kPatience;
  while (seen < 4 && std::chrono::steady_clock::now() < give_up) {
    pollfd ready{started.get(), POLLIN, 0};
    if (::poll(&ready, 1, 100) <= 0) continue;
    std::array<char, 64> bytes{};
    const ssize_t got = ::read(started.get(), bytes.data(), bytes.size());
    if (got > 0)
      seen += static_cast<std::size_t>(std::count(bytes.begin(), bytes.begin() + got, '+'));
  }
  EXPECT_GE(seen, 4U);
  gate.open();
  for (std::thread& t : clients) t.join();
  std::istringstream in(dir.read("log"));
  int running = 0;
  int most = 0;
  int runs = 0;
  for (std::string line; std::getline(in, line);) {
    running += line == "+" ? 1 : -1;
    runs += line == "+" ? 1 : 0;
    most = std::max(most, running);
  }
  EXPECT_EQ(runs, 8);
  EXPECT_EQ(running, 0);
  EXPECT_EQ(most, 4);
}

TEST(Exec, StderrLinesGoToTheLog) {
  std::array<int, 2> pipe{};
  ASSERT_EQ(::pipe2(pipe.data(), O_CLOEXEC | O_NONBLOCK), 0);
  const Fd log_in(pipe[0]);
  const Fd log_out(pipe[1]);
  ExecOptions options;
  options.argv = {"sh", "-c", "echo complaint >&2; echo ok"};
  options.log = Logger(log_out.get(), LogLevel::normal);
  test::ServerThread server(workers(2), echo_protocol(exec_handler(std::move(options))));
  EXPECT_EQ(request("127.0.0.1", server.port(), "x"), "ok\n");
  std::array<char, 4096> got{};
  const ssize_t n = ::read(log_in.get(), got.data(), got.size());
  ASSERT_GT(n, 0);
  const std::string line(got.data(), static_cast<std::size_t>(n));
  EXPECT_NE(line.find(" exec pid="), std::string::npos) << line;
  EXPECT_NE(line.find(" stderr=\"complaint\"\n"), std::string::npos) << line;
}

}  // namespace
}  // namespace sockecho
