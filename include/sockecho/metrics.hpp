// sockecho: counters an administrator can graph. The Prometheus text exposition (format 0.0.4)
// of whatever units are added to it (a server, its jobs), the request durations and the process,
// and the protocol of a small HTTP listener that serves it (GET /metrics) and the server's
// health (GET /health).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/exposition.hpp"
#include "sockecho/log.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

// The registry behind /metrics: the families of the units added to it (a server, a job queue:
// each a Collector, unknown to metrics), the request-duration histogram (fed from
// ServerOptions::on_connection) and the answers of the metrics listener, by status. Every
// counter it keeps is an atomic, so a worker recording a connection never waits for a scrape,
// nor a scrape for a worker.
class SOCKECHO_EXPORT Metrics {
 public:
  Metrics() noexcept;

  // A unit whose families each exposition includes, in the order added. Add every collector
  // before the metrics listener serves; each must outlive it.
  void add(const Collector& collector);

  // One finished connection: its duration goes into the histogram.
  void observe(const ConnectionRecord& record) noexcept;
  // One request to the metrics listener, answered with `status` (200, 400, 404, 405, 503...).
  void count_http(int status) noexcept;

  // The whole exposition: sockecho_build_info, the collectors' families, the durations, the
  // listener's answers, then process_*. HELP and TYPE for each family, base units (seconds,
  // bytes), _total on counters.
  [[nodiscard]] std::string exposition() const;

 private:
  std::vector<const Collector*> collectors_;
  DurationHistogram durations_;
  // Answers by status: 200, 400, 404, 405, 408, 503, in that order.
  static constexpr std::array<int, 6> kStatuses = {200, 400, 404, 405, 408, 503};
  std::array<std::atomic<std::uint64_t>, kStatuses.size()> http_{};
};

// Most bytes of a request head, and longest time for one request, the metrics listener accepts.
inline constexpr std::size_t kMaxHttpHead = 8192;
inline constexpr std::chrono::milliseconds kHttpRequestTime{2000};
// Most requests the metrics listener serves at once (its workers, started on demand).
inline constexpr unsigned kMetricsWorkers = 128;

// The metrics listener's protocol, for a Server of its own (kMetricsWorkers workers, the
// kHttpRequestTime idle limit): GET /metrics (200, text/plain; version=0.0.4), GET /health (200
// "ok" while `serving()` says so, 503 "stopping" after), any other path 404, any other method
// 405, a request that cannot be parsed 400, one over kMaxHttpHead 431 (counted as 400) and one
// slower than kHttpRequestTime 408; every answer closes the connection. Each answer is counted
// on `metrics` and, at verbose level, logged on `log`.
[[nodiscard]] SOCKECHO_EXPORT std::shared_ptr<Protocol> metrics_protocol(
    Metrics& metrics, std::function<bool()> serving, Logger log = {});

}  // namespace sockecho
