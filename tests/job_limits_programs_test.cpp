// sockecho-server's per-run limits of the host (--job-memory, --job-cpu) as a user meets them:
// the real binaries, a job or a request over a limit killed alone with its reason in the log and
// status lines, the server and the next job going on, and the command lines refused at start.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::RunResult;
using test::ServerProcess;

const std::string kHog = SOCKECHO_HOG_PROGRAM;
constexpr std::uint64_t kJobMemory = std::uint64_t{64} << 20;
// Reads "BYTES [MS]" (memory) or "[MS]" (cpu) from the request: the hog with those arguments,
// for ever without MS.
const std::vector<std::string> kMemoryHog = {"--exec", "sh", "-c",
                                             "read bytes ms; exec " + kHog + " memory $bytes $ms"};
const std::vector<std::string> kCpuHog = {"--exec", "sh", "-c",
                                          "read ms; exec " + kHog + " cpu $ms"};

// A background server with a status listener, the limits in `args`, and a run bound of 20 s so
// that a limit not enforced fails as a timeout rather than hanging.
class LimitedServer : public ServerProcess {
 public:
  explicit LimitedServer(std::vector<std::string> args)
      : ServerProcess(with_status(std::move(args))) {
    const std::optional<std::string> line = stdout_line();
    if (line && line->rfind("status on 127.0.0.1:", 0) == 0) status_port_ = test::port_of(*line);
  }
  [[nodiscard]] std::uint16_t status_port() const { return status_port_; }
  std::string submit(const std::string& request) const {
    const std::string answer = sockecho::request("127.0.0.1", port(), request);
    if (answer.rfind("accepted ", 0) != 0 || answer.back() != '\n') return {};
    return answer.substr(9, answer.size() - 10);
  }
  // The status line once the job has ended.
  std::string ended(const std::string& id) const {
    std::string reply;
    (void)test::eventually([&] {
      reply = sockecho::request("127.0.0.1", status_port_, "status " + id);
      return reply.rfind("queued ", 0) != 0 && reply.rfind("running ", 0) != 0 &&
             reply.rfind("retrying ", 0) != 0;
    });
    return reply;
  }

 private:
  static std::vector<std::string> with_status(std::vector<std::string> args) {
    args.insert(args.begin(),
                {"--background", "--status", "127.0.0.1:0", "--jobs", "1", "--exec-timeout", "20"});
    return args;
  }
  std::uint16_t status_port_ = 0;
};

std::vector<std::string> joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(JobLimits, AJobOverJobMemoryDiesAloneWhileTheNextJobAndTheServerRunOn) {
  LimitedServer server(joined({"--job-memory", "64M"}, kMemoryHog));
  ASSERT_NE(server.status_port(), 0) << server.err();
  const std::string over = std::to_string(2 * kJobMemory);
  const auto killed_for_memory = [&] {
    std::string id = server.submit(over + "\n");
    const std::string line = server.ended(id);
    EXPECT_EQ(line.rfind("failed id=" + id + " attempts=1 signal=SIGKILL reason=memory ", 0), 0U)
        << line;
    return id;
  };
  const std::string id = killed_for_memory();
  ASSERT_TRUE(server.wait_stderr("job id=" + id + " attempt=1 ms=")) << server.err();
  EXPECT_NE(server.err().find(" signal=SIGKILL reason=memory\n"), std::string::npos)
      << server.err();
  // The next job, under the limit, runs to its end.
  const std::string next = server.submit(std::to_string(kJobMemory / 4) + " 10\n");
  EXPECT_EQ(server.ended(next).rfind("ok id=" + next + " attempts=1 exit=0 ", 0), 0U);
  if (test::kSanitized) return;  // a sanitizer's allocator holds freed memory: RSS says nothing
  // Runs killed at their limit cost the server nothing, however many: its RSS stays flat.
  for (int i = 0; i < 2; ++i) (void)killed_for_memory();
  const long before = test::rss_kib(server.pid());
  for (int i = 0; i < 4; ++i) (void)killed_for_memory();
  const long after = test::rss_kib(server.pid());
  ASSERT_GT(before, 0);
  EXPECT_LT(after - before, 4 * 1024) << before << " KiB, then " << after << " KiB";
}

TEST(JobLimits, ABusyJobOverJobCpuDiesAloneWhileTheNextJobAndTheServerRunOn) {
  LimitedServer server(joined({"--job-cpu", "1"}, kCpuHog));
  ASSERT_NE(server.status_port(), 0) << server.err();
  const std::string id = server.submit("\n");
  const std::string line = server.ended(id);
  EXPECT_EQ(line.rfind("failed id=" + id + " attempts=1 signal=SIGKILL reason=cpu ", 0), 0U)
      << line;
  ASSERT_TRUE(server.wait_stderr(" signal=SIGKILL reason=cpu")) << server.err();
  const std::string next = server.submit("10\n");
  EXPECT_EQ(server.ended(next).rfind("ok id=" + next + " attempts=1 exit=0 ", 0), 0U);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(JobLimits, AnExecRequestOverJobMemoryIsAResetWithReasonMemoryOnItsLine) {
  ServerProcess server(joined({"--exec-timeout", "20", "--job-memory", "64M"}, kMemoryHog));
  const RunResult r = test::run({test::client_program(), "--port", std::to_string(server.port()),
                                 "--quiet", "--send", std::to_string(2 * kJobMemory) + "\n"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(server.wait_stderr(" outcome=failed signal=SIGKILL reason=memory")) << server.err();
  // Another request, under the limit, is answered: the server runs on.
  const RunResult ok = test::run({test::client_program(), "--port", std::to_string(server.port()),
                                  "--quiet", "--send", std::to_string(kJobMemory / 4) + " 10\n"});
  EXPECT_EQ(ok.status, 0) << ok.err;
}

RunResult server_with(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {test::server_program(), "--port", "0"};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

TEST(JobLimits, TheLimitsWithoutExecOrWithABadValueAreUsageErrors) {
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--job-memory", "64M"}, "--job-memory needs --exec"},
           {{"--job-cpu", "1"}, "--job-cpu needs --exec"},
           {{"--job-cpu", "1.5", "--exec", "cat"}, "--job-cpu"},
           {{"--job-cpu", "-1", "--exec", "cat"}, "--job-cpu"},
           {{"--job-memory", "64X", "--exec", "cat"}, "--job-memory"},
       }) {
    const RunResult r = server_with(args);
    EXPECT_EQ(r.status, 2) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace
}  // namespace sockecho
