// sockecho: counters an administrator can graph. The Prometheus text exposition (format 0.0.4)
// of a server's counters, its request durations, its jobs and the process, and a small HTTP
// listener of its own that serves it (GET /metrics) and the server's health (GET /health).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include "sockecho/datagram_server.hpp"
#include "sockecho/jobs.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server.hpp"

namespace sockecho {

// Upper bounds, in seconds, of the request-duration histogram's buckets (+Inf follows).
inline constexpr std::array<double, 16> kDurationBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   10,   30};

// What an exposition reads: the server (connections, workers, whether it is stopping), with
// --background its job queue, or with --udp the datagram server instead. Any may be absent.
struct MetricsSources {
  const Server* server = nullptr;
  const JobQueue* jobs = nullptr;
  const DatagramServer* datagrams = nullptr;
};

// The counters that only metrics keep: request durations (fed from ServerOptions::on_connection)
// and the HTTP requests the metrics listener answered, by status. Every member is lock-free, so
// a worker recording a connection never waits for a scrape, nor a scrape for a worker.
class Metrics {
 public:
  Metrics() noexcept;

  // One finished connection: its duration goes into the histogram.
  void observe(const ConnectionRecord& record) noexcept;
  // One request to the metrics listener, answered with `status` (200, 400, 404, 405, 503...).
  void count_http(int status) noexcept;

  // The whole exposition: sockecho_* of the sources, then process_*. HELP and TYPE for each
  // family, base units (seconds, bytes), _total on counters.
  [[nodiscard]] std::string exposition(const MetricsSources& sources) const;

 private:
  std::array<std::atomic<std::uint64_t>, kDurationBuckets.size() + 1> buckets_{};  // +Inf last
  std::atomic<std::uint64_t> duration_sum_us_{0};
  std::atomic<std::uint64_t> duration_count_{0};
  // Answers by status: 200, 400, 404, 405, 408, 503, in that order.
  static constexpr std::array<int, 6> kStatuses = {200, 400, 404, 405, 408, 503};
  std::array<std::atomic<std::uint64_t>, kStatuses.size()> http_{};
};

// The head of an HTTP request, as far as the metrics listener needs it.
struct HttpRequestHead {
  enum class State {
    incomplete,  // no blank line yet: read more
    complete,    // method and target are set
    bad,         // not an HTTP/1.x request line, or a header line without a colon
  };
  State state = State::incomplete;
  std::string_view method;  // "GET"
  std::string_view target;  // "/metrics", without any "?query"
};

// Parses the request line and header lines of `text` (CRLF or bare LF line ends) without
// copying: the views point into `text`. Strict: "METHOD SP TARGET SP HTTP/1.x", a target that
// starts with '/', header lines "name: value" with a token name. Fuzzed (fuzz_http).
[[nodiscard]] HttpRequestHead parse_http_head(std::string_view text) noexcept;

// Most bytes of a request head, and longest time for one request, the metrics listener accepts.
inline constexpr std::size_t kMaxHttpHead = 8192;
inline constexpr std::chrono::milliseconds kHttpRequestTime{2000};

// Serves the exposition on a listener of its own, from a thread of its own: GET /metrics (200,
// text/plain; version=0.0.4), GET /health (200 "ok" while the server serves, 503 "stopping"
// once it stops), any other path 404, any other method 405, a request that cannot be parsed
// 400, one over kMaxHttpHead 431 (counted as 400) and one slower than kHttpRequestTime 408;
// every answer closes the connection. One request at a time: a scrape takes microseconds, and a
// client that stalls holds the listener for kHttpRequestTime at most.
class MetricsServer {
 public:
  MetricsServer(Listener listener, Metrics& metrics, const MetricsSources& sources,
                Logger log = {});
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  MetricsServer(MetricsServer&&) = delete;
  MetricsServer& operator=(MetricsServer&&) = delete;
  // Stops accepting and joins the thread.
  ~MetricsServer();

  [[nodiscard]] const Address& address() const noexcept { return listener_.address(); }

 private:
  void run() noexcept;
  void answer(Connection& connection);

  Listener listener_;
  Metrics& metrics_;
  MetricsSources sources_;
  Logger log_;
  std::thread thread_;
};

}  // namespace sockecho
