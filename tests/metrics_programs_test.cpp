// sockecho-server --metrics: the second stdout line, promtool's verdict on the exposition, the
// health check through a drain, usage errors, and a real Prometheus scraping it and answering a
// query with the server's counter.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/program.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::MeteredServer;

// GET path from 127.0.0.1:port with HTTP/1.0; the whole answer.
std::string http_get(std::uint16_t port, const std::string& path) {
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  c.write_all("GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  return c.read_to_end_string();
}

// Checks docs/grafana-dashboard.json the way Grafana will read it (JSON; each panel with a
// unique id, a grid position, the dashboard's Prometheus data source and targets with unique
// refIds and one-line queries) and prints each query with Grafana's variables given values
// Prometheus takes: $__rate_interval a minute, $instance any instance.
constexpr const char* kDashboardCheck = R"(
import json, sys
dash = json.load(open(sys.argv[1], encoding="utf-8"))
assert dash["title"] and dash["uid"], "a title and a uid"
names = [v["name"] for v in dash["templating"]["list"]]
assert names == ["datasource", "instance"], names
ids = set()
for panel in dash["panels"]:
    assert panel["id"] not in ids, f"panel id {panel['id']} twice"
    ids.add(panel["id"])
    assert all(isinstance(panel["gridPos"][k], int) for k in "xywh"), panel["title"]
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    refs = [t["refId"] for t in panel["targets"]]
    assert refs and len(refs) == len(set(refs)), panel["title"]
    for target in panel["targets"]:
        expr = target["expr"]
        assert "\n" not in expr and "$instance" in expr, expr
        print(expr.replace("$__rate_interval", "1m").replace("$instance", ".+"))
)";

// The dashboard's queries, checked and printed by kDashboardCheck; nullopt without python3.
std::optional<std::vector<std::string>> dashboard_queries() {
  const std::optional<std::string> python = test::installed("python3");
  if (!python) return std::nullopt;
  const test::RunResult r = test::run(
      {*python, "-c", kDashboardCheck, SOCKECHO_SOURCE_DIR "/docs/grafana-dashboard.json"});
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<std::string> queries;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) queries.push_back(line);
  return queries;
}

// The names of the series in a Prometheus text exposition (a histogram's _bucket, _sum and
// _count included).
std::set<std::string> series_names(const std::string& exposition) {
  std::set<std::string> names;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

// For a query string: every byte but the unreserved ones as %XX.
std::string url_encoded(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if ((std::isalnum(byte) != 0) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      std::array<char, 4> hex{};
      (void)std::snprintf(hex.data(), hex.size(), "%%%02X", byte);
      out += hex.data();
    }
  }
  return out;
}

TEST(MetricsProgram, TheGrafanaDashboardAsksOnlyForSeriesTheServerExposes) {
  const std::optional<std::vector<std::string>> queries = dashboard_queries();
  if (!queries) GTEST_SKIP() << "python3 not found";
  ASSERT_GE(queries->size(), 12U);
  // --background and --status, so that the job and status series are there too.
  MeteredServer m({"--quiet", "--background", "--status", "127.0.0.1:0", "--exec", "true"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  const std::set<std::string> exposed =
      series_names(test::body_of(http_get(m.metrics_port(), "/metrics")));
  ASSERT_TRUE(exposed.count("sockecho_up")) << "the exposition has no sockecho_up";
  const std::regex series(R"(\b(?:sockecho|process)_[a-z_]+\b)");
  std::set<std::string> asked;
  for (const std::string& query : *queries) {
    for (std::sregex_iterator it(query.begin(), query.end(), series), end; it != end; ++it) {
      asked.insert(it->str());
      EXPECT_TRUE(exposed.count(it->str())) << it->str() << " in " << query;
    }
  }
  // Every series family the dashboard is about has a panel.
  for (const char* family :
       {"sockecho_connections_total", "sockecho_request_duration_seconds_bucket",
        "sockecho_workers", "sockecho_jobs_queued", "sockecho_jobs_refused_total",
        "sockecho_jobs_retrying", "sockecho_jobs_total", "sockecho_jobs_ack_seconds_bucket",
        "sockecho_jobs_oldest_queued_seconds", "sockecho_jobs_run_seconds_bucket",
        "sockecho_status_requests_total", "process_resident_memory_bytes"}) {
    EXPECT_TRUE(asked.count(family)) << family << " has no panel";
  }
}

TEST(MetricsProgram, PrintsASecondLineAndServesWhatPromtoolAccepts) {
  MeteredServer m({"--quiet"});
  ASSERT_NE(m.metrics_port(), 0) << m.out() << m.err();
  EXPECT_EQ(m.ready_line().rfind("listening on 127.0.0.1:", 0), 0U);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(request("127.0.0.1", m.port(), "hi"), "数据是 hi");
  const std::string response = http_get(m.metrics_port(), "/metrics");
  EXPECT_EQ(response.rfind("HTTP/1.1 200 OK\r\n", 0), 0U) << response;
  const std::string body = test::body_of(response);
  // Each connection is counted once it has closed, a moment after its reply was read.
  EXPECT_NE(body.find("sockecho_connections_accepted_total 4\n"), std::string::npos) << body;
  const std::optional<std::string> promtool = test::installed("promtool");
  if (!promtool) GTEST_SKIP() << "promtool not found (apt-get install prometheus)";
  const test::RunResult check = test::run({*promtool, "check", "metrics"}, body);
  EXPECT_EQ(check.status, 0) << check.out << check.err << body;
  EXPECT_EQ(check.out + check.err, "") << "promtool warns of nothing";
}

TEST(MetricsProgram, BackgroundJobsAreInTheExposition) {
  MeteredServer m({"--quiet", "--background", "--exec", "true"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  const std::string reply = request("127.0.0.1", m.port(), "job");
  EXPECT_EQ(reply.rfind("accepted ", 0), 0U) << reply;
  const std::string body = test::body_of(http_get(m.metrics_port(), "/metrics"));
  EXPECT_NE(body.find("sockecho_jobs_accepted_total 1\n"), std::string::npos) << body;
  EXPECT_NE(body.find("# TYPE sockecho_jobs_total counter\n"), std::string::npos) << body;
}

TEST(MetricsProgram, UdpDatagramsAreCountedByOutcome) {
  MeteredServer m({"--quiet", "--udp"});
  ASSERT_NE(m.metrics_port(), 0) << m.out() << m.err();
  const test::RunResult sent = test::run(
      {test::client_program(), "--udp", "--port", std::to_string(m.port()), "--send", "ping"});
  EXPECT_EQ(sent.status, 0) << sent.err;
  EXPECT_EQ(sent.out, "数据是 ping");
  // A datagram is counted by outcome once its reply has gone, a moment after the client has it.
  std::string body;
  (void)test::eventually([&] {
    body = test::body_of(http_get(m.metrics_port(), "/metrics"));
    return body.find("sockecho_datagrams_total{outcome=\"ok\"} 1\n") != std::string::npos;
  });
  EXPECT_NE(body.find("sockecho_datagrams_received_total 1\n"), std::string::npos) << body;
  EXPECT_NE(body.find("sockecho_datagrams_total{outcome=\"ok\"} 1\n"), std::string::npos) << body;
  EXPECT_NE(body.find("sockecho_up 1\n"), std::string::npos) << body;
  EXPECT_EQ(body.find("sockecho_connections_total"), std::string::npos) << "no connections here";
  const std::optional<std::string> promtool = test::installed("promtool");
  if (!promtool) GTEST_SKIP() << "promtool not found (apt-get install prometheus)";
  const test::RunResult check = test::run({*promtool, "check", "metrics"}, body);
  EXPECT_EQ(check.status, 0) << check.out << check.err;
}

TEST(MetricsProgram, HealthTurns503WhileTheServerDrains) {
  MeteredServer m({"--verbose"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  EXPECT_EQ(test::body_of(http_get(m.metrics_port(), "/health")), "ok\n");
  // A request in flight keeps the server draining after SIGTERM until it is finished; in flight
  // once a worker has taken it (one still in the backlog would be refused at the stop).
  Connection in_flight = connect("127.0.0.1", m.port());
  in_flight.set_timeout(test::kPatience);
  in_flight.write_all("half");
  ASSERT_TRUE(m.wait_stderr("open peer=127.0.0.1:")) << m.err();
  m.signal(SIGTERM);
  std::string health;
  for (int i = 0; i < 1000 && health.rfind("HTTP/1.1 503 ", 0) != 0; ++i) {
    health = http_get(m.metrics_port(), "/health");  // 200 until the signal thread has stopped it
  }
  EXPECT_EQ(health.rfind("HTTP/1.1 503 ", 0), 0U) << health;
  EXPECT_EQ(test::body_of(health), "stopping\n");
  in_flight.close_write();
  EXPECT_EQ(in_flight.read_to_end_string(), "数据是 half");
  EXPECT_EQ(m.wait(), 0) << m.err();
}

TEST(MetricsProgram, ADrainDelayKeepsServingWhileHealthSays503) {
  MeteredServer m({"--drain-delay", "2"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  m.signal(SIGTERM);
  ASSERT_TRUE(m.wait_stderr("stopping in 2000 ms")) << m.err();
  const std::string health = http_get(m.metrics_port(), "/health");
  EXPECT_EQ(health.rfind("HTTP/1.1 503 ", 0), 0U) << health;
  EXPECT_NE(test::body_of(http_get(m.metrics_port(), "/metrics")).find("sockecho_up 0\n"),
            std::string::npos);
  // Announced, not yet stopped: a new connection is still served.
  EXPECT_EQ(request("127.0.0.1", m.port(), "late"), "数据是 late");
  EXPECT_EQ(m.wait(), 0) << m.err();
  EXPECT_NE(m.err().find("stopping: no new connections"), std::string::npos);
}

TEST(MetricsProgram, BadValuesAndAPortInUse) {
  for (const std::string value :
       {"9100", "localhost", ":9100", "[::1]9100", "::1:9100", "127.0.0.1:99999", "127.0.0.1:x"}) {
    const test::RunResult r = test::run({test::server_program(), "--metrics", value});
    EXPECT_EQ(r.status, 2) << value << ": " << r.err;
    EXPECT_NE(r.err.find("--metrics"), std::string::npos) << r.err;
  }
  const Listener taken = Listener::bind("127.0.0.1", 0);
  const std::string endpoint = "127.0.0.1:" + std::to_string(taken.address().port());
  const test::RunResult r =
      test::run({test::server_program(), "--port", "0", "--metrics", endpoint});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "") << "no ready line before the metrics listener is bound";
  // Which of the server's addresses was taken: the flag first, the old text kept after it.
  EXPECT_EQ(r.err, "sockecho-server: --metrics: bind " + endpoint + ": Address already in use\n");
}

// A free loopback port for a program that cannot report the one it took (Prometheus): bound
// and released. Another process could take it in between; the caller tries again if so.
std::uint16_t free_port() { return Listener::bind("127.0.0.1", 0).address().port(); }

TEST(MetricsProgram, ARealPrometheusScrapesTheCounters) {
  const std::optional<std::string> binary = test::installed("prometheus");
  if (!binary) GTEST_SKIP() << "prometheus not found (apt-get install prometheus)";
  MeteredServer m({"--verbose"});
  ASSERT_NE(m.metrics_port(), 0) << m.err();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(request("127.0.0.1", m.port(), "x"), "数据是 x");
  ASSERT_TRUE(m.wait_stderr(" outcome=ok")) << m.err();

  test::ScratchDir dir;
  std::ofstream(dir.file("prometheus.yml"))
      << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
      << "scrape_configs:\n  - job_name: sockecho\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << m.metrics_port() << "']\n";
  std::optional<test::Child> prometheus;
  std::uint16_t port = 0;
  for (int attempt = 0; attempt < 3 && !prometheus; ++attempt) {
    port = free_port();
    prometheus.emplace(std::vector<std::string>{
        *binary, "--config.file=" + dir.file("prometheus.yml"),
        "--storage.tsdb.path=" + dir.file("data"),
        "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=info"});
    if (!prometheus->wait_stderr("Server is ready to receive web requests", 60s)) {
      prometheus.reset();  // the port was taken after all, or it failed: try again
    }
  }
  ASSERT_TRUE(prometheus) << "prometheus did not start";

  // Each scrape is a verbose line of the server's; once two have happened after the requests,
  // the counter is stored (a query can still come a moment early: it is asked again after the
  // next scrape).
  constexpr std::string_view kOkSeries = R"("outcome":"ok")";
  std::string answer;
  for (int scrape = 0; scrape < 10; ++scrape) {
    ASSERT_TRUE(m.wait_stderr("metrics peer=127.0.0.1:", 30s)) << m.err();
    if (scrape == 0) continue;
    answer = test::body_of(http_get(port, "/api/v1/query?query=sockecho_connections_total"));
    if (answer.find(kOkSeries) != std::string::npos) break;
  }
  EXPECT_NE(answer.find(R"("status":"success")"), std::string::npos) << answer;
  EXPECT_NE(answer.find(R"("__name__":"sockecho_connections_total")"), std::string::npos) << answer;
  // The ok series holds the five connections: its value is the string "5".
  const std::size_t ok = answer.find(kOkSeries);
  ASSERT_NE(ok, std::string::npos) << answer;
  EXPECT_NE(answer.find(R"(,"5"])", ok), std::string::npos) << answer;
  // Prometheus takes every query of the Grafana dashboard (a parse error is "status":"error").
  if (const std::optional<std::vector<std::string>> queries = dashboard_queries()) {
    for (const std::string& query : *queries) {
      const std::string result =
          test::body_of(http_get(port, "/api/v1/query?query=" + url_encoded(query)));
      EXPECT_NE(result.find(R"("status":"success")"), std::string::npos) << query << "\n" << result;
    }
  }
  prometheus->signal(SIGTERM);
  EXPECT_EQ(prometheus->wait(60s), 0);
}

}  // namespace
}  // namespace sockecho
