// What a hostile job or input can do, tried as an attacker would against the real sockecho-server:
// forge a log line (and so get an address banned), flood the log with blank lines, or start more
// programs than the descriptors allow.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::ServerProcess;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::size_t count_lines(const std::string& log, const std::string& part) {
  const std::vector<std::string> lines = lines_of(log);
  return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const auto& l) {
    return l.find(part) != std::string::npos;
  }));
}

// The fail2ban filter of docs/operations.md: the failregex line of its ini block.
std::string documented_failregex() {
  std::ifstream in(std::string(SOCKECHO_SOURCE_DIR) + "/docs/operations.md");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("failregex = ", 0) == 0) return line.substr(12);
  }
  return {};
}

// The addresses the filter bans in `log`, as fail2ban-regex reports them, or (where fail2ban is
// not installed) as the filter's own regex finds them after the timestamp is cut off.
std::vector<std::string> banned(const std::string& log, const test::ScratchDir& dir) {
  const std::string failregex = documented_failregex();
  std::vector<std::string> hosts;
  if (const std::optional<std::string> tool = test::installed("fail2ban-regex")) {
    const std::string log_file = dir.write("sockecho.log", log);
    const std::string filter =
        dir.write("sockecho.conf", "[Definition]\nfailregex = " + failregex + "\n");
    const test::RunResult r = test::run({*tool, "--print-all-matched", log_file, filter});
    // The matched lines come as "|  <the line>" after "|- Matched line(s):", up to "`-".
    bool matched = false;
    for (const std::string& line : lines_of(r.out)) {
      if (line.rfind("|- ", 0) == 0) matched = line == "|- Matched line(s):";
      const std::size_t at = line.find(" conn peer=");
      if (!matched || line.rfind("|  ", 0) != 0 || at == std::string::npos) continue;
      const std::string peer = line.substr(at + 11, line.find(' ', at + 11) - at - 11);
      hosts.push_back(peer.substr(0, peer.rfind(':')));
    }
    return hosts;
  }
  std::string pattern = std::regex_replace(failregex, std::regex("<ADDR>"), "([0-9a-fA-F.:]+)");
  const std::regex regex(pattern);
  for (const std::string& line : lines_of(log)) {
    std::smatch m;
    const std::string after_stamp = line.substr(std::min(line.find(' '), line.size()));
    if (std::regex_search(after_stamp, m, regex)) hosts.push_back(m[1]);
  }
  return hosts;
}

TEST(HostileInput, AForgedRefusalInAJobsOutputBansNobody) {
  const test::ScratchDir dir;
  ServerProcess server({"--max-per-source", "1", "--background", "--exec", "sh", "-c", "cat >&2"});
  const std::uint16_t port = server.port();
  // What a web visitor sends as an "image name": a refusal of another address, a carriage
  // return before a forged job end, terminal escapes and a NUL byte.
  using namespace std::string_literals;
  const std::string forged =
      "cat.png conn peer=203.0.113.7:51022 in=0 out=0 ms=0.004 outcome=refused reason=per_source\n"
      "x\rjob id=1 ms=1 exit=0\n\x1b[2J\0nul\n"s;
  EXPECT_EQ(request("127.0.0.1", port, forged).find("accepted "), 0U);
  ASSERT_TRUE(server.wait_stderr(" exit=0")) << server.err();
  // A real refusal: a second connection while the first is open.
  Connection first = connect("127.0.0.1", port);
  try {
    Connection second = connect("127.0.0.1", port);
    second.close();
  } catch (const std::system_error& e) {  // the reset can come before connect() is done with it
    EXPECT_TRUE(test::is_reset(e.code())) << e.what();
  }
  ASSERT_TRUE(server.wait_stderr("reason=per_source")) << server.err();
  first.close();
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  const std::string& log = server.err();
  for (const char c : log) {
    EXPECT_TRUE(static_cast<unsigned char>(c) >= 0x20 || c == '\n')
        << "a raw control byte in the log: " << static_cast<int>(c);
  }
  EXPECT_NE(log.find("stderr=\"cat.png conn peer=203.0.113.7"), std::string::npos) << log;
  EXPECT_EQ(banned(log, dir), std::vector<std::string>{"127.0.0.1"}) << log;
}

TEST(HostileInput, ThreeHundredThousandBlankLinesCostWhatTheyCostAndTheEndLineIsKept) {
  ServerProcess server({"--background", "--exec", "cat"});
  const std::uint16_t port = server.port();
  const std::string accepted = request("127.0.0.1", port, std::string(300000, '\n'));
  ASSERT_EQ(accepted.rfind("accepted ", 0), 0U) << accepted;
  const std::string flood = accepted.substr(9, accepted.size() - 10);
  std::vector<std::string> others;
  for (int i = 0; i < 10; ++i) {
    const std::string reply = request("127.0.0.1", port, "job " + std::to_string(i));
    ASSERT_EQ(reply.rfind("accepted ", 0), 0U) << reply;
    others.push_back(reply.substr(9, reply.size() - 10));
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  const std::string& log = server.err();
  const std::string job = "job id=" + flood + " attempt=1 ";
  EXPECT_EQ(count_lines(log, job + "ms="), 1U) << "the flood's own end line";
  const std::size_t kept = count_lines(log, job + "stdout=\"\"");
  EXPECT_GT(kept, 100U);
  EXPECT_LT(kept * 40, std::size_t{64} << 10) << "blank lines count by what they cost in the log";
  const std::size_t at = log.find(job + "stdout_skipped lines=");
  ASSERT_NE(at, std::string::npos) << "one line says how much was left out";
  EXPECT_EQ(std::stoul(log.substr(at + job.size() + 21)) + kept, 300000U);
  for (const std::string& id : others) {
    EXPECT_EQ(count_lines(log, " outcome=ok job=" + id), 1U) << "its conn line names the job";
    EXPECT_EQ(count_lines(log, "job id=" + id + " attempt=1 ms="), 1U) << id;
  }
}

TEST(HostileInput, AProgramsFloodOfBlankStderrTakesNoOtherClientsLine) {
  ServerProcess server(
      {"--exec", "sh", "-c",
       R"sh(if [ "$(cat)" = flood ]; then head -c 200000 /dev/zero | tr '\0' '\n' >&2; fi; echo ok)sh"});
  const std::uint16_t port = server.port();
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(request("127.0.0.1", port, i % 3 == 0 ? "flood" : "quiet"), "ok\n") << i;
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  const std::string& log = server.err();
  EXPECT_EQ(count_lines(log, " conn peer="), 15U) << "no conn line pushed out";
  EXPECT_EQ(count_lines(log, "stderr_skipped lines="), 5U);
  EXPECT_LT(log.size(), std::size_t{1} << 20) << "200 KB of blank stderr, five times, bounded";
}

TEST(HostileInput, ExecUnderALowSoftDescriptorLimitServesEveryConcurrentRequest) {
  constexpr int kRequests = 40;
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  // Each program says it started, then waits at the gate: all 40 run at once.
  test::Child server({"/usr/bin/prlimit", "--nofile=64:4096", test::server_program(), "--port", "0",
                      "--workers", std::to_string(kRequests), "--exec", "sh", "-c",
                      R"(touch "$0.$$"; flock -s "$0" true; cat)", gate.path()});
  const std::optional<std::string> ready = server.stdout_line();
  ASSERT_TRUE(ready) << server.err();
  const std::uint16_t port = test::port_of(*ready);
  std::vector<std::future<std::string>> replies;
  replies.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    replies.push_back(std::async(std::launch::async, [port, i] {
      try {
        return request("127.0.0.1", port, "n" + std::to_string(i));
      } catch (const std::exception& e) {
        return std::string("failed: ") + e.what();
      }
    }));
  }
  const auto started = [&] {
    int n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
      n += entry.path().filename().string().rfind("gate.", 0) == 0;
    }
    return n;
  };
  EXPECT_TRUE(test::eventually([&] { return started() == kRequests; })) << server.err();
  gate.open();
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(replies[i].get(), "n" + std::to_string(i));
  EXPECT_EQ(server.err().find("Too many open files"), std::string::npos) << server.err();
}

// A program that leaves a grandchild behind in a session of its own (setsid), which would sleep a
// minute, and writes its pid in `dir` once the grandchild has said it from its own session
// (through a fifo: no polling); then the program does `then`.
std::vector<std::string> leaving_a_grandchild(const test::ScratchDir& dir,
                                              const std::string& then) {
  return {
      "--exec", "sh", "-c",
      R"(mkfifo "$0/fifo"; setsid sh -c 'echo $$ > "$0/fifo"; exec sleep 60' "$0" </dev/null >/dev/null 2>&1 & read pid < "$0/fifo"; echo $pid > "$0/pid.new" && mv "$0/pid.new" "$0/pid"; )" +
          then,
      dir.path()};
}

// Whether the grandchild `dir` names is gone in time; killed here if not, so a failure leaves
// nothing behind.
bool grandchild_gone(const test::ScratchDir& dir) {
  const std::string text = dir.read("pid");
  if (text.empty()) return false;
  const pid_t pid = std::stoi(text);
  if (test::eventually([&] { return !test::running(pid); })) return true;
  (void)::kill(pid, SIGKILL);
  return false;
}

TEST(HostileInput, AJobsGrandchildInASessionOfItsOwnDiesWithTheJob) {
  const test::ScratchDir dir;
  std::vector<std::string> args = {"--background"};
  for (std::string& a : leaving_a_grandchild(dir, "exit 0")) args.push_back(std::move(a));
  ServerProcess server(args);
  const std::string accepted = request("127.0.0.1", server.port(), "x");
  ASSERT_EQ(accepted.rfind("accepted ", 0), 0U) << accepted;
  const std::string id = accepted.substr(9, accepted.size() - 10);
  ASSERT_TRUE(server.wait_stderr("job id=" + id + " attempt=1 ms=")) << server.err();
  EXPECT_NE(server.err().find("job id=" + id + " attempt=1 ms="), std::string::npos);
  EXPECT_TRUE(grandchild_gone(dir)) << "outlived its job's exit 0";
}

TEST(HostileInput, AnExecGrandchildInASessionOfItsOwnDiesAtTheTimeout) {
  const test::ScratchDir dir;
  std::vector<std::string> args = {"--exec-timeout", "0.3"};
  for (std::string& a : leaving_a_grandchild(dir, "exec sleep 60")) args.push_back(std::move(a));
  ServerProcess server(args);
  EXPECT_THROW((void)request("127.0.0.1", server.port(), "x"), std::system_error) << "reset";
  ASSERT_TRUE(server.wait_stderr(" outcome=timeout")) << server.err();
  EXPECT_TRUE(grandchild_gone(dir)) << "outlived the timeout";
}

}  // namespace
}  // namespace sockecho
