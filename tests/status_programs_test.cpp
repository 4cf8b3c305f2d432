// sockecho-server --background --status, the real program: the ready lines in order, a job
// submitted, asked about and read from a shell's tools (sockecho-client), retries by exit 75
// logged one line per run, --keep, the status listener answering while every job-listener worker
// is held, bind failures naming the flag, and a Unix status socket with --unix-mode.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::ServerProcess;

// GET path from 127.0.0.1:port with HTTP/1.0; the whole answer.
std::string http_get(std::uint16_t port, const std::string& path) {
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  c.write_all("GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  return c.read_to_end_string();
}

// A background server with a status listener on a free port, and `args`.
class StatusServer : public ServerProcess {
 public:
  explicit StatusServer(std::vector<std::string> args)
      : ServerProcess(with_status(std::move(args))) {
    const std::optional<std::string> line = stdout_line();
    if (line && line->rfind("status on 127.0.0.1:", 0) == 0) {
      status_port_ = test::port_of(*line);
    }
  }
  [[nodiscard]] std::uint16_t status_port() const { return status_port_; }
  std::string ask(const std::string& request) const {
    return sockecho::request("127.0.0.1", status_port_, request);
  }
  std::string submit(const std::string& request) const {
    const std::string answer = sockecho::request("127.0.0.1", port(), request);
    if (answer.rfind("accepted ", 0) != 0 || answer.back() != '\n') return {};
    return answer.substr(9, answer.size() - 10);
  }
  // The status line once the job has ended (any state but queued, running, retrying).
  std::string ended(const std::string& id) const {
    std::string reply;
    (void)test::eventually([&] {
      reply = ask("status " + id);
      return reply.rfind("queued ", 0) != 0 && reply.rfind("running ", 0) != 0 &&
             reply.rfind("retrying ", 0) != 0;
    });
    return reply;
  }

 private:
  static std::vector<std::string> with_status(std::vector<std::string> args) {
    args.insert(args.begin(), {"--background", "--status", "127.0.0.1:0"});
    return args;
  }
  std::uint16_t status_port_ = 0;
};

TEST(StatusServer, TheReadyLinesComeInOrderEachWithItsRealPort) {
  ServerProcess server(
      {"--background", "--metrics", "127.0.0.1:0", "--status", "127.0.0.1:0", "--exec", "true"});
  EXPECT_EQ(server.ready_line().rfind("listening on 127.0.0.1:", 0), 0U);
  const std::optional<std::string> metrics = server.stdout_line();
  const std::optional<std::string> status = server.stdout_line();
  ASSERT_TRUE(metrics && status);
  EXPECT_EQ(metrics->rfind("metrics on 127.0.0.1:", 0), 0U) << *metrics;
  ASSERT_EQ(status->rfind("status on 127.0.0.1:", 0), 0U) << *status;
  EXPECT_NE(test::port_of(*status), 0);
  EXPECT_EQ(request("127.0.0.1", test::port_of(*status), "status abc"),
            "unknown id=abc attempts=0 queued_ms=0\n");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

TEST(StatusServer, SubmitAskAndReadTheResultFromAShell) {
  StatusServer server({"--exec", "sh", "-c", "echo \"got $(cat)\"; echo note >&2"});
  ASSERT_NE(server.status_port(), 0);
  const std::string id = server.submit("work");
  ASSERT_FALSE(id.empty());
  const std::string line = server.ended(id);
  EXPECT_EQ(line.rfind("ok id=" + id + " attempts=1 exit=0 queued_ms=", 0), 0U) << line;
  EXPECT_NE(line.find(" output_bytes=9 stderr_bytes=5\n"), std::string::npos) << line;
  // sockecho-client reaches the status listener with the options it has.
  const test::RunResult asked =
      test::run({test::client_program(), "--port", std::to_string(server.status_port()), "--send",
                 "result " + id});
  EXPECT_EQ(asked.status, 0) << asked.err;
  EXPECT_EQ(asked.out, line + "got work\n");
  const test::RunResult unknown =
      test::run({test::client_program(), "--port", std::to_string(server.status_port()), "--send",
                 "status nosuchjob"});
  EXPECT_EQ(unknown.status, 0) << "any reply is exit 0";
  EXPECT_EQ(unknown.out, "unknown id=nosuchjob attempts=0 queued_ms=0\n");
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  // With --status, stdout is the result and not logged; stderr still is.
  EXPECT_EQ(server.err().find("stdout="), std::string::npos) << server.err();
  EXPECT_NE(server.err().find("job id=" + id + " attempt=1 stderr=\"note\""), std::string::npos)
      << server.err();
  EXPECT_NE(server.err().find(" status peer=127.0.0.1:"), std::string::npos);
  EXPECT_NE(server.err().find(" verb=result outcome=ok"), std::string::npos);
}

TEST(StatusServer, EachRunIsOneLogLineAndARetryNamesItsDelay) {
  StatusServer server(
      {"--retry-delay", "0.05", "--max-attempts", "3", "--exec", "sh", "-c", "exit 75"});
  const std::string id = server.submit("x");
  ASSERT_FALSE(id.empty());
  const std::string line = server.ended(id);
  EXPECT_EQ(line.rfind("failed id=" + id + " attempts=3 exit=75 ", 0), 0U) << line;
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  const std::string& log = server.err();
  EXPECT_NE(log.find("job id=" + id + " attempt=1 ms="), std::string::npos) << log;
  EXPECT_NE(log.find(" exit=75 retry_in_ms=50\n"), std::string::npos) << log;
  EXPECT_NE(log.find(" exit=75 retry_in_ms=100\n"), std::string::npos) << "doubled";
  const std::size_t last = log.find("job id=" + id + " attempt=3 ms=");
  ASSERT_NE(last, std::string::npos) << log;
  EXPECT_EQ(log.substr(last, log.find('\n', last) - last).find("retry_in_ms"), std::string::npos)
      << "the last run is not retried";
}

TEST(StatusServer, AnEndedJobIsUnknownPastKeep) {
  StatusServer server({"--keep", "0.5", "--exec", "true"});
  const std::string id = server.submit("x");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(server.ended(id).rfind("ok id=", 0), 0U);
  EXPECT_TRUE(test::eventually([&] {
    return server.ask("status " + id) == "unknown id=" + id + " attempts=0 queued_ms=0\n";
  }));
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  EXPECT_NE(server.err().find("job id=" + id + " forgotten reason=keep"), std::string::npos);
}

TEST(StatusServer, TheStatusListenerAnswersWhileEveryJobListenerWorkerIsHeld) {
  StatusServer server({"--workers", "2", "--exec", "true"});
  {
    // Two clients that connect and say nothing hold both workers of the job listener; a third
    // waits in its backlog.
    const Connection first = connect("127.0.0.1", server.port());
    const Connection second = connect("127.0.0.1", server.port());
    const Connection third = connect("127.0.0.1", server.port());
    EXPECT_EQ(server.ask("status held"), "unknown id=held attempts=0 queued_ms=0\n");
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
}

TEST(StatusServer, ABindFailureNamesTheFlag) {
  const Listener taken = Listener::bind("127.0.0.1", 0);
  const std::string at = "127.0.0.1:" + std::to_string(taken.address().port());
  Child server(
      {test::server_program(), "--port", "0", "--background", "--status", at, "--exec", "true"});
  EXPECT_EQ(server.wait(), 1);
  EXPECT_EQ(server.out(), "");
  EXPECT_EQ(server.err(), "sockecho-server: --status: bind " + at + ": Address already in use\n")
      << "the reason once";
}

TEST(StatusServer, AUnixStatusSocketTakesUnixMode) {
  const test::ScratchDir dir;
  const std::string path = dir.file("status.sock");
  ServerProcess server(
      {"--background", "--status", "unix:" + path, "--unix-mode", "0600", "--exec", "true"});
  const std::optional<std::string> line = server.stdout_line();
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "status on unix:" + path);
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600U);
  const test::RunResult asked =
      test::run({test::client_program(), "--unix", path, "--send", "status abc"});
  EXPECT_EQ(asked.out, "unknown id=abc attempts=0 queued_ms=0\n") << asked.err;
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  EXPECT_FALSE(test::exists(path)) << "its socket file is removed at the end";
}

TEST(StatusServer, ItAnswersThroughTheWholeDrain) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  StatusServer server({"--exec", "sh", "-c", "flock -s \"$0\" true", gate.path()});
  const std::string id = server.submit("x");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(
      test::eventually([&] { return server.ask("status " + id).rfind("running", 0) == 0; }));
  server.signal(SIGTERM);
  ASSERT_TRUE(server.wait_stderr("jobs: draining"));
  EXPECT_EQ(server.ask("status " + id).rfind("running id=" + id, 0), 0U);
  gate.open();
  ASSERT_EQ(server.wait(), 0);
}

TEST(StatusServer, RetriesRunsAndStatusRequestsAreInTheExposition) {
  test::MeteredServer m({"--quiet", "--background", "--status", "127.0.0.1:0", "--retry-delay",
                         "3600", "--exec", "sh", "-c", "exit 75"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  const std::optional<std::string> line = m.stdout_line();
  ASSERT_TRUE(line && line->rfind("status on ", 0) == 0);
  const std::uint16_t status = test::port_of(*line);
  const std::string answer = request("127.0.0.1", m.port(), "job");
  ASSERT_EQ(answer.rfind("accepted ", 0), 0U) << answer;
  const std::string id = answer.substr(9, answer.size() - 10);
  ASSERT_TRUE(test::eventually(
      [&] { return request("127.0.0.1", status, "status " + id).rfind("retrying ", 0) == 0; }));
  EXPECT_EQ(request("127.0.0.1", status, "cancel " + id).rfind("cancelled id=" + id, 0), 0U);
  (void)request("127.0.0.1", status, "status nosuchjob");
  (void)request("127.0.0.1", status, "bogus");
  std::string body;
  ASSERT_TRUE(test::eventually([&] {
    body = test::body_of(http_get(m.metrics_port(), "/metrics"));
    return body.find(R"(sockecho_status_requests_total{verb="invalid",outcome="error"} 1)") !=
           std::string::npos;
  })) << body;
  EXPECT_NE(body.find("sockecho_jobs_retrying 0\n"), std::string::npos) << body;
  EXPECT_NE(body.find("sockecho_jobs_run_seconds_count 1\n"), std::string::npos) << body;
  EXPECT_NE(body.find(R"(sockecho_jobs_total{outcome="cancelled"} 1)"), std::string::npos) << body;
  EXPECT_NE(body.find(R"(sockecho_status_requests_total{verb="status",outcome="unknown"} 1)"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find(R"(sockecho_status_requests_total{verb="cancel",outcome="ok"} 1)"),
            std::string::npos)
      << body;
  const std::optional<std::string> promtool = test::installed("promtool");
  if (!promtool) GTEST_SKIP() << "promtool not found (apt-get install prometheus)";
  const test::RunResult check = test::run({*promtool, "check", "metrics"}, body);
  EXPECT_EQ(check.status, 0) << check.out << check.err;
  EXPECT_EQ(check.out + check.err, "") << "promtool warns of nothing";
}

TEST(StatusServer, LargeResultsStayWithinTheMemoryBudgetTheOldestForgotten) {
  // 24 jobs of 4 MiB each, kept with a budget of 32 MiB: at most about 7 fit at once.
  StatusServer server(
      {"--max-total-bytes", "32M", "--jobs", "1", "--exec", "head", "-c", "4194304", "/dev/zero"});
  const long before = test::rss_kib(server.pid());
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i) {
    const std::string id = server.submit("x");
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(server.ended(id).rfind("ok id=" + id, 0), 0U);
    ids.push_back(id);
  }
  const long after = test::rss_kib(server.pid());
  EXPECT_EQ(server.ask("status " + ids.front()).rfind("unknown id=", 0), 0U)
      << "the oldest is forgotten";
  const std::string last = server.ask("result " + ids.back());
  EXPECT_EQ(last.size() - last.find('\n') - 1, 4194304U) << "the newest is kept whole";
  // 24 results are 96 MiB; the budget keeps 32 of them, and RSS grows by no more than that and
  // the buffers in flight.
  // (AddressSanitizer holds freed memory in its quarantine, ThreadSanitizer keeps shadow memory
  // of its own: under either, RSS says nothing of the budget.)
  if (!test::kSanitized) {
    EXPECT_LT(after - before, 64 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  EXPECT_NE(server.err().find(" forgotten reason=memory"), std::string::npos);
}

TEST(StatusServer, AnInterruptedRunIsCountedAcrossARestartWithASpool) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string gate_path = dir.file("gate");
  std::string id;
  {
    const test::Gate gate(gate_path);
    StatusServer server({"--spool", spool, "--exec", "sh", "-c",
                         R"sh(flock -s "$0" true; echo "attempt $SOCKECHO_JOB_ATTEMPT")sh",
                         gate_path});
    id = server.submit("x");
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(
        test::eventually([&] { return server.ask("status " + id).rfind("running ", 0) == 0; }));
    server.signal(SIGTERM);
    ASSERT_TRUE(server.wait_stderr("jobs: stopping"));
    server.signal(SIGTERM);  // the second signal kills the running program: interrupted
    EXPECT_NE(server.wait(), 0);
  }
  StatusServer again({"--spool", spool, "--exec", "sh", "-c",
                      R"sh(flock -s "$0" true; echo "attempt $SOCKECHO_JOB_ATTEMPT")sh",
                      gate_path});
  const std::string line = again.ended(id);
  EXPECT_EQ(line.rfind("ok id=" + id + " attempts=2 exit=0 ", 0), 0U) << line;
  const std::string result = again.ask("result " + id);
  EXPECT_EQ(result.substr(result.find('\n') + 1), "attempt 2\n");
  again.signal(SIGTERM);
  ASSERT_EQ(again.wait(), 0);
  EXPECT_NE(again.err().find(" interrupted=1 "), std::string::npos) << again.err();
}

}  // namespace
}  // namespace sockecho
