// Metrics: the exposition of a real server's counters, and the metrics listener answering real
// HTTP requests, including the ones a hostile client sends.
#include "sockecho/metrics.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/jobs.hpp"
#include "sockecho/metrics_listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// The value of the sample line that starts with `series` ("name{labels}"), or -1.
double sample(const std::string& exposition, const std::string& series) {
  const std::string start = "\n" + series + " ";
  const std::size_t at = exposition.find(start);
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + start.size()));
}

// One HTTP exchange with the metrics listener: the raw bytes sent, the whole answer read.
std::string http(std::uint16_t port, std::string_view raw) {
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  c.write_all(raw);
  c.close_write();
  return c.read_to_end_string();
}

TEST(Metrics, TheExpositionCountsARealServersConnections) {
  Metrics metrics;
  ServerOptions options;
  options.on_connection = [&metrics](const ConnectionRecord& r) { metrics.observe(r); };
  test::ServerThread server(options);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), "数据是 hello");
  ASSERT_TRUE(server.wait_finished(3));
  metrics.add(server.server());
  const std::string text = metrics.exposition();
  EXPECT_EQ(sample(text, "sockecho_connections_accepted_total"), 3) << text;
  EXPECT_EQ(sample(text, "sockecho_connections_total{outcome=\"ok\"}"), 3) << text;
  EXPECT_EQ(sample(text, "sockecho_connections_total{outcome=\"reset\"}"), 0) << text;
  EXPECT_EQ(sample(text, "sockecho_bytes_received_total"), 15) << text;
  EXPECT_EQ(sample(text, "sockecho_bytes_sent_total"), 3 * 15) << text;
  EXPECT_EQ(sample(text, "sockecho_workers_max"), kDefaultWorkers) << text;
  EXPECT_EQ(sample(text, "sockecho_up"), 1) << text;
  EXPECT_EQ(sample(text, "sockecho_request_duration_seconds_count"), 3) << text;
  EXPECT_EQ(sample(text, "sockecho_request_duration_seconds_bucket{le=\"+Inf\"}"), 3) << text;
  EXPECT_GT(sample(text, "sockecho_request_duration_seconds_sum"), 0) << text;
  EXPECT_GT(sample(text, "process_resident_memory_bytes"), 0) << text;
  EXPECT_GT(sample(text, "process_open_fds"), 2) << text;
  EXPECT_GT(sample(text, "process_start_time_seconds"), 1.7e9) << text;
  EXPECT_GE(sample(text, "process_cpu_seconds_total"), 0) << text;
  EXPECT_NE(text.find("sockecho_build_info{version=\""), std::string::npos);
  // Every family has HELP and TYPE, each once.
  EXPECT_NE(text.find("# TYPE sockecho_request_duration_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE sockecho_connections_total counter\n"), std::string::npos);
  EXPECT_EQ(text.find("sockecho_jobs_"), std::string::npos) << "no job queue, no job metrics";
}

TEST(Metrics, BucketsAreCumulativeAndPlaceEachDuration) {
  Metrics metrics;
  for (const auto us : {50, 700, 700, 40'000'000}) {
    ConnectionRecord r;
    r.duration = std::chrono::microseconds(us);
    metrics.observe(r);
  }
  const std::string text = metrics.exposition();
  const std::string b = "sockecho_request_duration_seconds_bucket";
  EXPECT_EQ(sample(text, b + "{le=\"0.0001\"}"), 1) << text;
  EXPECT_EQ(sample(text, b + "{le=\"0.0005\"}"), 1) << text;
  EXPECT_EQ(sample(text, b + "{le=\"0.001\"}"), 3) << text;
  EXPECT_EQ(sample(text, b + "{le=\"30\"}"), 3) << text;
  EXPECT_EQ(sample(text, b + "{le=\"+Inf\"}"), 4) << text;
  EXPECT_NEAR(sample(text, "sockecho_request_duration_seconds_sum"), 40.00145, 1e-9) << text;
}

TEST(MetricsListener, AnswersMetricsHealthAndEverythingElse) {
  Metrics metrics;
  test::ServerThread server;
  metrics.add(server.server());
  const MetricsListener http_server(Listener::bind("127.0.0.1", 0), metrics, server.server());
  const std::uint16_t port = http_server.address().port();

  const std::string scrape = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(scrape.rfind("HTTP/1.1 200 OK\r\n", 0), 0U) << scrape;
  EXPECT_NE(scrape.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_NE(scrape.find("Connection: close\r\n"), std::string::npos);
  const std::string body = test::body_of(scrape);
  EXPECT_NE(scrape.find("Content-Length: " + std::to_string(body.size()) + "\r\n"),
            std::string::npos);
  EXPECT_NE(body.find("sockecho_connections_accepted_total 0\n"), std::string::npos) << body;

  EXPECT_EQ(test::body_of(http(port, "GET /health HTTP/1.1\r\n\r\n")), "ok\n");
  EXPECT_EQ(http(port, "GET /nothing HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 ", 0), 0U);
  const std::string post = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 ", 0), 0U) << post;
  EXPECT_NE(post.find("Allow: GET\r\n"), std::string::npos) << post;
  EXPECT_EQ(http(port, "\x16\x03\x01\x02\x00").rfind("HTTP/1.1 400 ", 0), 0U);
  EXPECT_EQ(http(port, "GET /metr").rfind("HTTP/1.1 400 ", 0), 0U) << "closed mid-head";
  const std::string huge = "GET /metrics HTTP/1.1\r\nX-Long: " + std::string(20000, 'a');
  EXPECT_EQ(http(port, huge).rfind("HTTP/1.1 431 ", 0), 0U);

  server.server().stop();
  EXPECT_EQ(http(port, "GET /health HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 503 ", 0), 0U);
  const std::string after = test::body_of(http(port, "GET /metrics HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(sample(after, "sockecho_up"), 0) << after;
  // Every answer was counted by its status, the bad ones (431 included) as 400.
  EXPECT_EQ(sample(after, "sockecho_metrics_requests_total{code=\"200\"}"), 2) << after;
  EXPECT_EQ(sample(after, "sockecho_metrics_requests_total{code=\"400\"}"), 3) << after;
  EXPECT_EQ(sample(after, "sockecho_metrics_requests_total{code=\"404\"}"), 1) << after;
  EXPECT_EQ(sample(after, "sockecho_metrics_requests_total{code=\"405\"}"), 1) << after;
  EXPECT_EQ(sample(after, "sockecho_metrics_requests_total{code=\"503\"}"), 1) << after;
}

TEST(MetricsListener, AClientThatStallsIsCutAndTheNextOneIsAnswered) {
  Metrics metrics;
  const MetricsListener http_server(Listener::bind("127.0.0.1", 0), metrics, [] { return true; });
  const std::uint16_t port = http_server.address().port();
  // Half a request line, then nothing: answered 408 within the request time, not held forever.
  Connection stalled = connect("127.0.0.1", port);
  stalled.set_timeout(test::kPatience);
  stalled.write_all("GET /metrics HT");
  const auto start = Clock::now();
  const std::string answer = stalled.read_to_end_string();
  EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0U) << answer;
  EXPECT_LT(Clock::now() - start, kHttpRequestTime + 2s);
  EXPECT_EQ(test::body_of(http(port, "GET /health HTTP/1.1\r\n\r\n")), "ok\n");
}

TEST(MetricsListener, StalledClientsDelayNoOtherRequest) {
  // The listener serves requests on workers of its own: eight clients that each send half a
  // request and stall hold eight workers, and /health is answered while they are still held,
  // not after their kHttpRequestTime runs out one after the other.
  Metrics metrics;
  const MetricsListener http_server(Listener::bind("127.0.0.1", 0), metrics, [] { return true; });
  const std::uint16_t port = http_server.address().port();
  std::vector<Connection> stalled;
  for (int i = 0; i < 8; ++i) {
    stalled.push_back(connect("127.0.0.1", port));
    stalled.back().set_timeout(test::kPatience);
    stalled.back().write_all("GET /metrics HT");
  }
  EXPECT_EQ(test::body_of(http(port, "GET /health HTTP/1.1\r\n\r\n")), "ok\n");
  std::array<char, 64> byte{};
  for (Connection& c : stalled) {
    EXPECT_EQ(c.try_read(byte.data(), byte.size()), std::nullopt) << "answered before /health";
  }
  // Each is still cut in its time, with a 408.
  for (Connection& c : stalled) {
    const std::string answer = c.read_to_end_string();
    EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0U) << answer;
  }
}

TEST(MetricsListener, HealthIsAnsweredWhileTwentySilentConnectionsAreHeld) {
  Metrics metrics;
  const MetricsListener http_server(Listener::bind("127.0.0.1", 0), metrics, [] { return true; });
  const std::uint16_t port = http_server.address().port();
  std::vector<Connection> silent;  // connected, and nothing sent
  silent.reserve(20);
  for (int i = 0; i < 20; ++i) silent.push_back(connect("127.0.0.1", port));
  const auto start = Clock::now();
  EXPECT_EQ(test::body_of(http(port, "GET /health HTTP/1.1\r\n\r\n")), "ok\n");
  // A bound that survives sanitizers; the milliseconds are bench/hostile.py's.
  EXPECT_LT(Clock::now() - start, 1500ms);
  std::array<char, 64> byte{};
  for (Connection& c : silent) {
    EXPECT_EQ(c.try_read(byte.data(), byte.size()), std::nullopt) << "still held";
  }
}

TEST(MetricsListener, PastItsWorkersAConnectionWaitsInTheBacklog) {
  Metrics metrics;
  const MetricsListener http_server(Listener::bind("127.0.0.1", 0), metrics, [] { return true; });
  const std::uint16_t port = http_server.address().port();
  std::vector<Connection> silent;
  silent.reserve(kMetricsWorkers);
  for (unsigned i = 0; i < kMetricsWorkers; ++i) silent.push_back(connect("127.0.0.1", port));
  // Every worker holds a silent connection (each waits for its request line): the next
  // connection, a whole request, is not answered until one of them is cut.
  Connection next = connect("127.0.0.1", port);
  next.set_timeout(test::kPatience + kHttpRequestTime);
  next.write_all("GET /health HTTP/1.1\r\n\r\n");
  const auto start = Clock::now();
  pollfd answered{next.fd(), POLLIN, 0};  // nothing to read for 300 ms: still in the backlog
  EXPECT_EQ(::poll(&answered, 1, 300), 0) << "answered past " << kMetricsWorkers;
  const std::string answer = next.read_to_end_string();
  EXPECT_EQ(test::body_of(answer), "ok\n") << answer;
  EXPECT_GE(Clock::now() - start, kHttpRequestTime - 400ms) << "answered once a worker was free";
}

TEST(MetricsListener, JobMetricsComeWithAJobQueue) {
  JobOptions options;
  options.argv = {"true"};
  JobQueue jobs(options);
  ASSERT_TRUE(jobs.submit("x", {}).has_value());
  jobs.drain();
  Metrics metrics;
  metrics.add(jobs);
  const std::string text = metrics.exposition();
  EXPECT_EQ(sample(text, "sockecho_jobs_accepted_total"), 1) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_total{outcome=\"ok\"}"), 1) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_running"), 0) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_queued"), 0) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_refused_total{reason=\"busy\"}"), 0) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_refused_total{reason=\"spool\"}"), 0) << text;
  EXPECT_EQ(sample(text, "sockecho_jobs_ack_seconds_count"), 1) << text;
}

}  // namespace
}  // namespace sockecho
