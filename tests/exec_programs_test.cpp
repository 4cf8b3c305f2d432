// sockecho-server --exec as a user meets it: the real binaries, a program per request, and the
// command lines refused at start.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::RunResult;
using test::ServerProcess;

RunResult server_with(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {test::server_program(), "--port", "0"};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

TEST(ExecProgram, EveryArgumentAfterExecIsTheProgramsAndThePrefixIsEmpty) {
  // "--timeout" after --exec belongs to the program: printf prints it.
  ServerProcess server({"--exec", "sh", "-c", R"(printf '%s|' "$0" "$1"; cat)", "--timeout", "x"});
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), "--timeout|x|hello");
}

TEST(ExecProgram, AnExplicitPrefixStillApplies) {
  ServerProcess server({"--prefix", "> ", "--exec", "cat"});
  const std::string port = std::to_string(server.port());
  const RunResult r =
      test::run({test::client_program(), "--port", port, "--quiet", "--send", "job"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "> job");
}

TEST(ExecProgram, AFailedProgramIsAResetTheClientExitsOneAndTheLogSaysWhy) {
  ServerProcess server({"--exec", "sh", "-c", "echo broken >&2; exit 3"});
  const RunResult r = test::run(
      {test::client_program(), "--port", std::to_string(server.port()), "--quiet", "--send", "x"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  ASSERT_TRUE(server.wait_stderr(" outcome=failed exit=3 ")) << server.err();
  EXPECT_NE(server.err().find(" stderr=\"broken\""), std::string::npos) << server.err();
}

TEST(ExecProgram, OutputOverMaxOutputIsKilledAndResetWithFlatMemory) {
  if (test::kSanitized) {
    GTEST_SKIP() << "a sanitizer's allocator holds freed memory in quarantine: RSS says nothing";
  }
  // One worker: with workers on demand, which thread serves a connection varies, and a thread
  // serving its first one grows an allocator arena of its own: that is not what is measured here.
  ServerProcess server(
      {"--workers", "1", "--max-output", "1M", "--exec", "yes"});  // endless output
  const auto reset = [&] {
    Connection c = connect("127.0.0.1", server.port(), test::kPatience);
    c.set_timeout(test::kPatience);
    c.close_write();
    return test::read_until_reset(c).has_value();
  };
  // The first runs grow what later ones reuse (each worker's share of the allocator); after
  // them, killing a program at its limit costs nothing more, however often it happens.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(reset()) << i;
  const long before = test::status_kib(server.pid(), "VmRSS");
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(reset()) << i;
  const long after = test::status_kib(server.pid(), "VmRSS");
  ASSERT_GT(before, 0);
  EXPECT_LT(after - before, 4 * 1024) << before << " KiB, then " << after << " KiB";
  ASSERT_TRUE(server.wait_stderr(" outcome=too_large")) << server.err();
}

// Whether /proc shows `pid` no longer running (gone, or a zombie for init to reap), waiting
// test::kPatience at most; if it still runs it is killed here, so a failure leaves nothing behind.
bool gone_in_time(pid_t pid) {
  if (test::eventually([&] { return !test::running(pid); })) return true;
  (void)::kill(pid, SIGKILL);
  return false;
}

TEST(ExecProgram,
     KillingTheServerWithSigkillKillsItsProgramsAndWhatTheyStartedInSessionsOfTheirOwn) {
  const test::ScratchDir dir;
  // The program says its pid, starts a grandchild in a session of its own (setsid) that says
  // its pid, and sleeps a minute: the request stays in flight.
  ServerProcess server(
      {"--exec", "sh", "-c",
       R"(echo $$ > "$0/program"; setsid sh -c 'echo $$ > "$0/pid.new" && mv "$0/pid.new" "$0/pid"; exec sleep 60' "$0" </dev/null >/dev/null 2>&1 & exec sleep 60)",
       dir.path()});
  std::thread client([&] {
    try {
      (void)request("127.0.0.1", server.port(), "x");
    } catch (const std::exception&) {  // the server dies with the request unanswered
    }
  });
  const bool started = test::eventually([&] { return !dir.read("pid").empty(); });
  // The server's helpers: its spawner and the spawner's supervisors, the running one included.
  std::vector<pid_t> helpers = test::children_of(server.pid());
  for (const pid_t spawner : std::vector<pid_t>(helpers)) {
    EXPECT_EQ(test::process_name(spawner), "sockecho-spawn");
    for (const pid_t supervisor : test::children_of(spawner)) helpers.push_back(supervisor);
  }
  EXPECT_GE(helpers.size(), 2U);
  server.signal(SIGKILL);
  const std::optional<int> status = server.wait();
  client.join();
  ASSERT_TRUE(started);
  EXPECT_EQ(status, 128 + SIGKILL);
  const pid_t program = std::stoi(dir.read("program"));
  const pid_t grandchild = std::stoi(dir.read("pid"));
  EXPECT_TRUE(gone_in_time(program)) << program;
  EXPECT_TRUE(gone_in_time(grandchild)) << grandchild;
  for (const pid_t helper : helpers) EXPECT_TRUE(gone_in_time(helper)) << helper;
}

TEST(ExecProgram, UnusableCommandLinesAreUsageErrors) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--exec", "sockecho-no-such-program"},
           {"--exec", "/dev/null"},  // exists, not an executable file
           {"--exec"},
           {"--mode", "line", "--exec", "cat"},
           {"--max-output", "1K"},
       }) {
    const RunResult r = server_with(args);
    EXPECT_EQ(r.status, 2) << args.back() << ": " << r.err;
    EXPECT_EQ(r.out, "") << "no ready line";
    EXPECT_NE(r.err.find("sockecho-server: "), std::string::npos) << r.err;
  }
}

// A job that leaves its input in DIR/ID once the gate DIR/gate opens.
std::vector<std::string> gated_job(const test::ScratchDir& dir) {
  return {"--exec", "sh", "-c", R"(flock -s "$0/gate" true && cat > "$0/$SOCKECHO_JOB_ID")",
          dir.path()};
}

TEST(BackgroundProgram, SigtermRunsEveryAcknowledgedJobThenExitsZero) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  std::vector<std::string> args = {"--background", "--jobs", "1", "--queue", "8"};
  const std::vector<std::string> job = gated_job(dir);
  args.insert(args.end(), job.begin(), job.end());
  ServerProcess server(args);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    const std::string reply = request("127.0.0.1", server.port(), "job" + std::to_string(i));
    ASSERT_EQ(reply.rfind("accepted ", 0), 0U) << reply;
    ids.push_back(reply.substr(9, reply.size() - 10));
  }
  server.signal(SIGTERM);
  // The first job is running, or (on a loaded machine) about to be: four either way.
  const std::optional<std::string> draining = server.wait_stderr("jobs: draining running=");
  ASSERT_TRUE(draining) << server.err();
  EXPECT_TRUE(draining->find("running=1 queued=3") != std::string::npos ||
              draining->find("running=0 queued=4") != std::string::npos)
      << *draining;
  gate.open();
  EXPECT_EQ(server.wait(), 0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(dir.read(ids[i]), "job" + std::to_string(i)) << ids[i];
    EXPECT_NE(server.err().find("job id=" + ids[i] + " attempt=1 ms="), std::string::npos)
        << server.err();
  }
  EXPECT_NE(server.err().find("jobs: done accepted=4 ok=4 "), std::string::npos) << server.err();
}

// The log's first lines say the server runs jobs, how many at once and how many may wait.
TEST(BackgroundProgram, TheStartSaysItRunsJobsWithItsJobsAndQueue) {
  ServerProcess server({"--background", "--jobs", "3", "--queue", "7", "--exec", "true"});
  const std::optional<std::string> line = server.wait_stderr(" jobs: start ");
  ASSERT_TRUE(line) << server.err();
  EXPECT_EQ(line->substr(line->find(" jobs: start ")),
            " jobs: start mode=background program=\"true\" jobs=3 queue=7 spool=none")
      << *line;
  ASSERT_TRUE(server.wait_stderr(" start listen=127.0.0.1:")) << server.err();
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(BackgroundProgram, ASecondSignalKillsTheRunningJobsAndSaysWhatWasLost) {
  const test::ScratchDir dir;
  const test::Gate gate(dir.file("gate"));  // never opened: what the job starts waits forever
  ServerProcess server({"--background", "--jobs", "1", "--exec", "sh", "-c",
                        R"(flock -s "$0/gate" true & echo $! > "$0/pid"; wait)", dir.path()});
  ASSERT_EQ(request("127.0.0.1", server.port(), "a").rfind("accepted ", 0), 0U);
  ASSERT_EQ(request("127.0.0.1", server.port(), "b").rfind("accepted ", 0), 0U);
  // The first job has started its waiter.
  const auto until = std::chrono::steady_clock::now() + test::kPatience;
  while (dir.read("pid").find('\n') == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  server.signal(SIGTERM);
  ASSERT_TRUE(server.wait_stderr("jobs: draining")) << server.err();
  server.signal(SIGTERM);
  const std::optional<int> exit_status = server.wait();
  EXPECT_NE(exit_status, 0);
  EXPECT_NE(server.err().find("jobs: abandoned running=1 (killed) queued=1"), std::string::npos)
      << server.err();
  // Nothing the job started outlives the server: its waiter is gone (or a zombie for init).
  const std::string pid = dir.read("pid");
  ASSERT_FALSE(pid.empty());
  const auto state = [&] {
    std::ifstream status("/proc/" + std::to_string(std::stoi(pid)) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("State:", 0) == 0) return line;
    }
    return std::string();
  };
  // One read of its state: a zombie reaped between two reads would look alive to the second.
  std::string last;
  const auto gone = [&] {
    last = state();
    return last.empty() || last.find('Z') != std::string::npos;
  };
  const auto patience = std::chrono::steady_clock::now() + test::kPatience;
  bool ended = gone();
  while (!ended && std::chrono::steady_clock::now() < patience) {
    std::this_thread::yield();
    ended = gone();
  }
  EXPECT_TRUE(ended) << last;
}

TEST(BackgroundProgram, BackgroundNeedsExec) {
  const RunResult r = server_with({"--background"});
  EXPECT_EQ(r.status, 2) << r.err;
}

}  // namespace
}  // namespace sockecho
