// sockecho-server --background, the real program, with jobs from several sources: queued jobs
// start in turns between sources, --max-queued-per-source refuses one source past its share
// (reason=queued_per_source, never per_source) while others are accepted, and the counters of
// both are exposed.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::ServerProcess;

// One request to 127.0.0.1:port from the address `from` (127.x.y.z): the whole reply.
std::string submit_from(const std::string& from, std::uint16_t port, const std::string& request) {
  ConnectOptions options;
  options.timeout = test::kPatience;
  options.source = resolve(from, 0).front();
  Connection c = connect(resolve("127.0.0.1", port).front(), options);
  c.set_timeout(test::kPatience);
  c.write_all(request);
  c.close_write();
  return c.read_to_end_string();
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Fairness, AThousandJobsFromOneSourceDelayAnothersByOneRoundAtMost) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  // Each job writes its request as it starts, then waits at the gate, then works half a second:
  // the order written is the order started, unless a job's shell takes longer than that to
  // write (a job started after B's cannot end, and free a slot for the next, before then).
  ServerProcess server(
      {"--background", "--jobs", "2", "--queue", "2000", "--exec", "sh", "-c",
       R"sh(read what; echo "$what" >> "$0/order"; flock -s "$0/gate" true; sleep 0.5)sh",
       dir.path()});
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(submit_from("127.0.0.2", server.port(), "a\n").rfind("accepted ", 0), 0U) << i;
  }
  ASSERT_TRUE(test::eventually([&] { return lines_of(dir.file("order")).size() == 2; }));
  ASSERT_EQ(submit_from("127.0.0.3", server.port(), "b\n").rfind("accepted ", 0), 0U);
  gate.open();
  ASSERT_TRUE(test::eventually([&] {
    const std::vector<std::string> order = lines_of(dir.file("order"));
    return std::find(order.begin(), order.end(), "b") != order.end();
  }));
  const std::vector<std::string> order = lines_of(dir.file("order"));
  const auto b = std::find(order.begin(), order.end(), "b") - order.begin();
  // Two of A's were running when B came; at most --jobs (2) more start before B's.
  EXPECT_LE(b, 2 + 2) << "B's job started after " << b << " of A's";
  server.signal(SIGTERM);
  // A second signal once the first has been taken (two at once are one), so the rest of A's
  // thousand need not run.
  ASSERT_TRUE(server.wait_stderr("jobs: draining")) << server.err();
  server.signal(SIGTERM);
  (void)server.wait();
}

TEST(Fairness, MaxQueuedPerSourceRefusesTheFloodAndNotTheOthers) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  test::MeteredServer server({"--background", "--jobs", "1", "--max-queued-per-source", "5",
                              "--exec", "flock", "-s", gate.path(), "true"});
  ASSERT_NE(server.metrics_port(), 0) << server.err();
  const auto scrape = [&] {
    Connection c = connect("127.0.0.1", server.metrics_port());
    c.set_timeout(test::kPatience);
    c.write_all("GET /metrics HTTP/1.0\r\n\r\n");
    return test::body_of(c.read_to_end_string());
  };
  // The first job runs (no longer queued) before the others come, however slow its start.
  ASSERT_EQ(submit_from("127.0.0.2", server.port(), "a").rfind("accepted ", 0), 0U);
  ASSERT_TRUE(test::eventually([&] {
    return scrape().find("\nsockecho_jobs_running 1\n") != std::string::npos;
  })) << scrape();
  int accepted = 1;
  int busy = 0;
  for (int i = 1; i < 20; ++i) {
    const std::string reply = submit_from("127.0.0.2", server.port(), "a");
    if (reply.rfind("accepted ", 0) == 0) ++accepted;
    if (reply == "busy\n") ++busy;
  }
  // One runs (no longer queued), five wait; the rest are refused.
  EXPECT_EQ(accepted, 6);
  EXPECT_EQ(busy, 14);
  EXPECT_EQ(submit_from("127.0.0.3", server.port(), "b").rfind("accepted ", 0), 0U)
      << "another source is accepted";
  const std::string body = scrape();
  EXPECT_NE(body.find(R"(sockecho_jobs_refused_total{reason="queued_per_source"} 14)"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("sockecho_jobs_oldest_queued_seconds "), std::string::npos);
  gate.open();
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(), 0);
  EXPECT_NE(server.err().find("outcome=refused reason=queued_per_source"), std::string::npos);
  EXPECT_EQ(server.err().find("reason=per_source"), std::string::npos)
      << "per_source alone feeds fail2ban";
}

TEST(Fairness, MaxQueuedPerSourceNeedsBackground) {
  const test::RunResult r =
      test::run({test::server_program(), "--max-queued-per-source", "3", "--exec", "true"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--max-queued-per-source needs --background"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sockecho
