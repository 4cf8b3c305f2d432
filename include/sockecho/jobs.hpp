// sockecho: background jobs (--background). A request is acknowledged at once and its program
// runs later, on a bounded queue beside the workers: what a web application hands its slow work
// to, so that the web request can return while the work goes on.
#pragma once

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sockecho/exposition.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/program.hpp"

namespace sockecho {

inline constexpr unsigned kDefaultJobs = 4;
inline constexpr std::size_t kDefaultQueue = 64;

struct JobOptions {
  std::vector<std::string> argv;      // the program and its arguments
  ProgramLimits limits;               // each job's runtime and output limits
  unsigned jobs = kDefaultJobs;       // programs run at once
  std::size_t queue = kDefaultQueue;  // jobs waiting beyond those
  // Most request bytes held by waiting jobs together; one more job is refused as busy. 0: none.
  std::size_t max_queued_bytes = 0;
  Logger log;  // each job's output lines and its end line
};

// How a job ended: its own ends, not a connection's outcomes (a job is never reset, say).
enum class JobEnd {
  ok,         // its program exited 0
  failed,     // a non-zero exit, a signal, a program that did not start
  timeout,    // it ran over its runtime limit
  too_large,  // it wrote over its output limit
};
inline constexpr std::array kJobEnds = {JobEnd::ok, JobEnd::failed, JobEnd::timeout,
                                        JobEnd::too_large};
[[nodiscard]] std::string_view to_string(JobEnd end) noexcept;

struct JobStats {
  std::uint64_t accepted = 0;
  std::uint64_t busy = 0;  // refused: the queue was full
  std::uint64_t running = 0;
  std::uint64_t queued = 0;
  std::array<std::uint64_t, kJobEnds.size()> ends{};  // indexed by JobEnd

  [[nodiscard]] std::uint64_t count(JobEnd end) const noexcept {
    return ends[static_cast<std::size_t>(end)];
  }
};

// "accepted=3 ok=2 failed=1 timeout=0 too_large=0 busy=0": the counters for a log line.
[[nodiscard]] std::string format_stats(const JobStats& stats);

// Runs jobs on `jobs` threads of its own, started with it. Job ids are unique across restarts:
// the queue's start time (seconds since the epoch), its process id and a counter.
class JobQueue final : public Collector {
 public:
  explicit JobQueue(JobOptions options);
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;
  JobQueue(JobQueue&&) = delete;
  JobQueue& operator=(JobQueue&&) = delete;
  // Abandons what is left (see abandon()) and joins its threads: call drain() first for a
  // clean stop.
  ~JobQueue();

  // Queues a job: the program runs later with `input` on its stdin and `env` plus
  // SOCKECHO_JOB_ID in its environment. Its id, or std::nullopt when the queue is full or
  // draining (busy).
  std::optional<std::string> submit(std::string input, std::vector<std::string> env);

  // Refuses new jobs, runs every one accepted so far to its end, then returns.
  void drain();

  // Kills the process group of every running job and drops the waiting ones: how many of each.
  // Safe from any thread (a second stop signal's callback).
  std::pair<std::size_t, std::size_t> abandon() noexcept;

  [[nodiscard]] JobStats stats() const;
  // sockecho_jobs_* : running, queued, accepted, refused, and finished by end.
  void collect(Exposition& out) const override;

 private:
  struct Job {
    std::string id;
    std::string input;
    std::vector<std::string> env;
  };

  void work() noexcept;
  void run(Job& job);
  void ended(JobEnd end);

  JobOptions options_;
  std::string id_stem_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> waiting_;
  std::size_t waiting_bytes_ = 0;
  std::unordered_set<Program*> running_;
  std::uint64_t next_ = 0;
  bool closed_ = false;     // no new jobs
  bool abandoned_ = false;  // no more jobs started
  JobStats stats_;
  std::vector<std::thread> threads_;
};

// A Handler that queues the request as a job and answers prefix + "accepted ID\n" at once, or
// prefix + "busy\n" (outcome refused, reason=busy) when the queue is full. The program gets the
// request's environment (exec_environment()).
[[nodiscard]] Handler background_handler(JobQueue& queue, std::string prefix);

}  // namespace sockecho
