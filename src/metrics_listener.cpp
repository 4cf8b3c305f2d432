#include "sockecho/metrics_listener.hpp"

#include <string>
#include <utility>

namespace sockecho {

namespace {

ServerOptions listener_options(const Logger& log) {
  ServerOptions options;
  options.workers = kMetricsWorkers;
  options.timeout = kHttpRequestTime;
  // The server's own lines stay out of the daemon's log; a failed request is worth a verbose one.
  options.on_connection = [log](const ConnectionRecord& record) {
    if (record.outcome != Outcome::ok && log.enabled(LogLevel::verbose)) {
      log.event(LogLevel::verbose, "metrics error=" + log_quoted(record.detail));
    }
  };
  return options;
}

}  // namespace

MetricsListener::MetricsListener(Listener listener, Metrics& metrics, const ServerCore& served,
                                 const Logger& log)
    : MetricsListener(
          std::move(listener), metrics, [&served] { return !served.stopping(); }, log) {}

MetricsListener::MetricsListener(Listener listener, Metrics& metrics, std::function<bool()> serving,
                                 const Logger& log)
    : server_(std::move(listener), metrics_protocol(metrics, std::move(serving), log),
              listener_options(log)),
      thread_(server_) {}

}  // namespace sockecho
