// sockecho: the status listener, where a client asks about a background job by its ID: what
// became of it (`status`), what it printed (`result`), and `cancel` or `retry` it. One request
// (`VERB ID`), a half-close, one reply, a close: the framing of the daemon's own listener, with no
// prefix. A Server of its own on a thread of its own, so that no client of the job listener,
// however many workers it holds, stops it answering.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sockecho/export.hpp"
#include "sockecho/exposition.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/jobs.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/server.hpp"
#include "sockecho/server_core.hpp"

namespace sockecho {

// Workers of the status listener at most (started on demand): past them, connections wait in
// its backlog.
inline constexpr unsigned kStatusWorkers = 128;
// The longest request: `VERB ID\r\n` with the longest verb and ID fits; one byte more is reset.
inline constexpr std::size_t kStatusMaxRequest = 100;
// The longest job ID a request may name.
inline constexpr std::size_t kMaxJobIdLength = 64;

// The reply's first line for a job, with its '\n':
// `STATE id=ID attempts=N[ exit=N| signal=NAME][ reason=R] queued_ms=Q[ run_ms=R output_bytes=B
// stderr_bytes=E]`, the run's fields once one has started. Durations run to `now` while they last.
[[nodiscard]] SOCKECHO_EXPORT std::string format_status(const Job& job, WallTime now);
// The line for an ID that was never issued, or is forgotten: `unknown id=ID attempts=0
// queued_ms=0`.
[[nodiscard]] SOCKECHO_EXPORT std::string format_unknown(std::string_view id);

// Whether `id` can be a job's ID: 1 to kMaxJobIdLength characters of [A-Za-z0-9_-].
[[nodiscard]] SOCKECHO_EXPORT bool valid_job_id(std::string_view id) noexcept;

struct SOCKECHO_EXPORT StatusOptions {
  // A connection's idle limit and the whole-request deadline (--timeout, --request-timeout).
  std::chrono::milliseconds timeout = kDefaultTimeout;
  std::chrono::milliseconds request_timeout = kDefaultRequestTimeout;
  // One line per request: `status peer=... verb=... outcome=...`.
  Logger log;
};

// Serves `jobs` on `listener` from construction until destruction, with up to kStatusWorkers
// workers started on demand. Every request is one log line and one count of
// sockecho_status_requests_total{verb,outcome}: verb one of status result cancel retry invalid,
// outcome one of ok unknown error timeout reset.
class SOCKECHO_EXPORT StatusListener final : public Collector {
 public:
  StatusListener(Listener listener, JobQueue& jobs, StatusOptions options = {});
  StatusListener(const StatusListener&) = delete;
  StatusListener& operator=(const StatusListener&) = delete;
  StatusListener(StatusListener&&) = delete;
  StatusListener& operator=(StatusListener&&) = delete;
  ~StatusListener();

  [[nodiscard]] const Address& address() const noexcept { return server_->address(); }
  void collect(Exposition& out) const override;

 private:
  static constexpr std::array<std::string_view, 5> kVerbs = {"status", "result", "cancel", "retry",
                                                             "invalid"};
  static constexpr std::array<std::string_view, 5> kOutcomes = {"ok", "unknown", "error", "timeout",
                                                                "reset"};
  void finished(const ConnectionRecord& record) noexcept;

  StatusOptions options_;
  std::array<std::array<std::atomic<std::uint64_t>, kOutcomes.size()>, kVerbs.size()> counts_{};
  std::unique_ptr<Server> server_;
  std::unique_ptr<ServingThread> thread_;  // after server_: it stops and joins before server_ goes
};

}  // namespace sockecho
