// sockecho: background jobs (--background). A request is acknowledged at once and its program
// runs later, on a bounded queue beside the workers: what a web application hands its slow work
// to, so that the web request can return while the work goes on.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sockecho/deadline.hpp"
#include "sockecho/exposition.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/program.hpp"
#include "sockecho/spool.hpp"

namespace sockecho {

inline constexpr unsigned kDefaultJobs = 4;
inline constexpr std::size_t kDefaultQueue = 64;
// Runs a job may start in all: one the server's death interrupted is queued again until then.
inline constexpr unsigned kDefaultMaxAttempts = 5;
// The wait before a job that asked to be retried (exit 75) runs again, doubled at each further
// attempt up to kMaxRetryDelay.
inline constexpr std::chrono::milliseconds kDefaultRetryDelay{10000};
inline constexpr std::chrono::milliseconds kMaxRetryDelay{3600000};
// How long an ended job is kept (its state and its stdout) for a client to ask about it, and how
// many ended jobs are kept at most; past either, the oldest is forgotten.
inline constexpr std::chrono::milliseconds kDefaultKeep{3600000};
inline constexpr std::size_t kDefaultKeepMax = 10000;

struct JobOptions {
  std::vector<std::string> argv;      // the program and its arguments, looked up once
  ProgramLimits limits;               // each job's runtime and output limits
  unsigned jobs = kDefaultJobs;       // programs run at once
  std::size_t queue = kDefaultQueue;  // jobs waiting beyond those
  // What each job's input is charged to from its acknowledgement until it ends (waiting and
  // running alike): a job whose input does not fit is refused as busy. Shared with the request
  // buffers of the protocol that feeds the queue, it makes one bound for both. Unset: none.
  std::shared_ptr<MemoryBudget> budget;
  Logger log;  // each job's output lines and its end line
  // Where jobs are kept on disk (--spool). With one, a job is acknowledged only once its record
  // is durable, its starts and end are recorded, the jobs the spool held at the start are queued
  // again (an interrupted run counts as an attempt), and a stop leaves the queued jobs in it.
  // Unset: in memory only.
  std::shared_ptr<Spool> spool;
  // With a spool: runs a job may start in all, interrupted ones included; then it ends failed,
  // reason=interrupted (a job that kills the server is not run again for ever).
  unsigned max_attempts = kDefaultMaxAttempts;
};

// What submit() answered: the job's id, or why it was refused.
struct Submission {
  std::string id;            // once accepted
  std::string_view refused;  // "busy" (full, no memory, stopping) or "spool" (not made durable)
  std::string why;           // for "spool": the error, for the log
  [[nodiscard]] bool accepted() const noexcept { return refused.empty(); }
};

// What a job queue found in its spool at the start.
struct SpoolFound {
  std::size_t queued = 0;       // accepted and never started: queued again
  std::size_t retrying = 0;     // waiting to be run again (a retry): queued again
  std::size_t interrupted = 0;  // running when the server died: queued again, or ended
  std::size_t ended = 0;        // ended (and now forgotten), or out of attempts
};

// Where a job is in its life.
enum class JobState {
  queued,   // acknowledged, waiting for a job thread
  running,  // its program runs
  ended,    // its program ended (see JobEnd)
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
[[nodiscard]] std::string_view to_string(JobState state) noexcept;
[[nodiscard]] std::string_view to_string(JobEnd end) noexcept;

// A job as a value: what the queue can say of it.
struct Job {
  std::string id;
  JobState state = JobState::queued;
  std::optional<JobEnd> end;  // once ended
  unsigned attempts = 0;      // times its program started
  std::size_t input_bytes = 0;
  Clock::time_point accepted{};  // when it was acknowledged
};

struct JobStats {
  std::uint64_t accepted = 0;
  std::uint64_t busy = 0;   // refused: the queue was full, or the budget had no room
  std::uint64_t spool = 0;  // refused: the job could not be made durable
  std::uint64_t running = 0;
  std::uint64_t queued = 0;
  std::array<std::uint64_t, kJobEnds.size()> ends{};  // indexed by JobEnd

  [[nodiscard]] std::uint64_t count(JobEnd end) const noexcept {
    return ends[static_cast<std::size_t>(end)];
  }
};

// "accepted=3 ok=2 failed=1 timeout=0 too_large=0 busy=0": the counters for a log line.
[[nodiscard]] std::string format_stats(const JobStats& stats);

// A new job id: 128 bits from the kernel's random source (getrandom), unguessable, so knowing an
// id is what lets a client ask about its job; 22 characters of [A-Za-z0-9_-]. Throws
// std::system_error when the random source fails.
[[nodiscard]] std::string new_job_id();

// Runs jobs on `jobs` threads of its own, started with it, each job with a new_job_id().
class JobQueue final : public Collector {
 public:
  // Throws std::invalid_argument without a program or with zero jobs, and std::system_error
  // when the program cannot be found (find_program()).
  explicit JobQueue(JobOptions options);
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;
  JobQueue(JobQueue&&) = delete;
  JobQueue& operator=(JobQueue&&) = delete;
  // Abandons what is left (see abandon()) and joins its threads: call drain() first for a
  // clean stop.
  ~JobQueue();

  // Queues a job: the program runs later with `input` on its stdin and `env` plus
  // SOCKECHO_JOB_ID and SOCKECHO_JOB_ATTEMPT in its environment. Refused "busy" when the queue is
  // full, its input does not fit the budget, or the queue is stopping; with a spool, accepted only
  // once its record (with `source`, the client's address) is durable, and refused "spool" when
  // it cannot be made so (disk full, an I/O error, a failed sync). Safe from many threads: one
  // sync covers every job waiting for it.
  Submission submit(std::string input, std::vector<std::string> env, std::string source);
  // submit() without a source: its id, or std::nullopt when refused.
  std::optional<std::string> submit(std::string input, std::vector<std::string> env);

  // What the spool held at the start (all zero without one).
  [[nodiscard]] const SpoolFound& found() const noexcept { return found_; }

  // The job of this id while it is queued or running; std::nullopt for one that ended (it is
  // forgotten then) or never was.
  [[nodiscard]] std::optional<Job> find(std::string_view id) const;

  // Refuses new jobs, runs every one accepted so far to its end, then returns. With a spool,
  // only the running ones end: the queued ones stay in the spool for the next start.
  void drain();

  // Kills every running job and all it started, and drops the waiting ones: how many of each.
  // Safe from any thread (a second stop signal's callback).
  std::pair<std::size_t, std::size_t> abandon() noexcept;

  [[nodiscard]] JobStats stats() const;
  // sockecho_jobs_*: running, queued, accepted, refused, and finished by end.
  void collect(Exposition& out) const override;

 private:
  // A job with what it needs to run: its input and environment.
  struct Work {
    Job job;
    std::string input;
    std::vector<std::string> env;
    bool charged = true;  // its input is charged to the budget (a replayed one may not fit)
  };
  // A running job, and the program that runs it once it has started.
  struct Running {
    Job job;
    Program* program = nullptr;
  };

  void work() noexcept;
  void run(Work& work);
  [[nodiscard]] ProgramResult start_and_wait(Work& work);
  void log_output(const std::string& who, const ProgramResult& result) const;
  // `result`: how its program ended, when it started.
  void ended(const Work& work, JobEnd end, const ProgramResult* result);
  void refund(const Work& work) noexcept;
  void replay();
  // Records `record` in the spool without waiting (its durability rides on the next sync); a
  // failure is logged, the job goes on.
  void record(const SpoolRecord& record) const noexcept;

  JobOptions options_;
  std::string path_;  // the program, found once
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Work> waiting_;
  std::unordered_map<std::string, Running> running_;
  std::size_t pending_ = 0;  // accepted into a slot, waiting for their spool record's sync
  SpoolFound found_;
  DurationHistogram acks_;  // from a submission to its answer, the sync included
  bool closed_ = false;     // no new jobs
  bool abandoned_ = false;  // no more jobs started
  JobStats stats_;
  std::vector<std::thread> threads_;
};

// A Handler that queues the request as a job and answers prefix + "accepted ID\n" at once (its
// connection line with job=ID), or
// prefix + "busy\n" (outcome refused, reason=busy) when the queue is full. The program gets the
// request's environment (exec_environment()).
[[nodiscard]] Handler background_handler(JobQueue& queue, std::string prefix);

}  // namespace sockecho
