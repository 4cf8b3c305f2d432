// sockecho: the metrics listener, a Server of its own with the metrics protocol, running on a
// thread of its own while whatever it reports on serves.
#pragma once

#include <functional>

#include "sockecho/export.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/metrics.hpp"
#include "sockecho/server.hpp"
#include "sockecho/server_core.hpp"

namespace sockecho {

// Serves `metrics` (GET /metrics) and the health of `served` (GET /health: 503 once it is
// stopping) on `listener`, from construction until destruction, with up to kMetricsWorkers
// workers started on demand and the kHttpRequestTime limit: a client that stalls holds one
// worker for that long at most and delays no other. Its lines go to `log` at verbose level
// only: one per answer, and one per request that failed ("metrics: ...").
class SOCKECHO_EXPORT MetricsListener {
 public:
  MetricsListener(Listener listener, Metrics& metrics, const ServerCore& served,
                  const Logger& log = {});
  // Serves health as `serving()` says, for a library user with no ServerCore to report on.
  MetricsListener(Listener listener, Metrics& metrics, std::function<bool()> serving,
                  const Logger& log = {});

  [[nodiscard]] const Address& address() const noexcept { return server_.address(); }
  [[nodiscard]] const Server& server() const noexcept { return server_; }

 private:
  Server server_;
  ServingThread thread_;  // after server_: it stops and joins before server_ goes
};

}  // namespace sockecho
