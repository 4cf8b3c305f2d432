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
#include <map>
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
#include "sockecho/export.hpp"
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

// A wall-clock time as jobs keep it (as the spool does): whole milliseconds since the epoch. A
// job's times survive a restart, so they are not the steady clock's.
using WallTime = SpoolTime;

struct SOCKECHO_EXPORT JobOptions {
  std::vector<std::string> argv;      // the program and its arguments, looked up once
  ProgramLimits limits;               // each job's runtime and output limits
  unsigned jobs = kDefaultJobs;       // programs run at once
  std::size_t queue = kDefaultQueue;  // jobs waiting (queued or retrying) beyond those
  // What each job's input is charged to from its acknowledgement until it is forgotten, and the
  // stdout of each run as it is taken, kept with the ended job: a job whose input does not fit
  // is refused as busy; for output, the oldest ended jobs are forgotten to make room. Shared
  // with the request buffers of the protocol that feeds the queue, it makes one bound for all.
  // Unset: none.
  std::shared_ptr<MemoryBudget> budget;
  Logger log;  // each run's end line, its stderr lines, and its stdout lines unless kept_output
  // Where jobs are kept on disk (--spool). With one, a job is acknowledged only once its record
  // is durable, its starts and ends are recorded, the jobs the spool held at the start are queued
  // again (an interrupted run counts as an attempt), and a stop leaves the queued and retrying
  // jobs in it. Unset: in memory only.
  std::shared_ptr<Spool> spool;
  // Runs a job may start in all, interrupted ones and retries included; then a run that asks to
  // be retried ends failed with exit=75, and an interrupted one failed, reason=interrupted (a job
  // that kills the server is not run again for ever). At least 1.
  unsigned max_attempts = kDefaultMaxAttempts;
  // The wait before the second run of a job that exited 75 (kRetryExit), doubled at each further
  // run up to kMaxRetryDelay. Without a spool, a stop runs retrying jobs at once.
  std::chrono::milliseconds retry_delay = kDefaultRetryDelay;
  // How long an ended job is kept after its end (the wall clock), and how many are kept at most;
  // past either, the oldest is forgotten (logged) and no longer found. Zero keep: forgotten at
  // once.
  std::chrono::milliseconds keep = kDefaultKeep;
  std::size_t keep_max = kDefaultKeepMax;
  // Whether stdout is a job's result, read through result() (--status), instead of log lines.
  bool output_is_result = false;
  // Jobs queued or retrying from one source (job_source()) at once; one more is refused
  // "queued_per_source". Zero: no limit.
  std::size_t max_queued_per_source = 0;
  // Whether queued jobs start in turns between sources (round robin: one job of each source
  // with jobs waiting, in turn), or strictly in the order they were queued.
  bool turns = true;
};

// The source a job is counted and queued under, as the spool keeps it: an IP address without its
// port (an IPv4-mapped one as IPv4: "127.0.0.1", "::1"), or over a Unix socket the peer's user
// id ("uid=33"; a peer without credentials by its path).
[[nodiscard]] SOCKECHO_EXPORT std::string job_source(const Address& peer);

// The exit status by which a program asks to be run again later (EX_TEMPFAIL, sysexits.h).
inline constexpr int kRetryExit = 75;

// What submit() answered: the job's id, or why it was refused.
struct SOCKECHO_EXPORT Submission {
  std::string id;  // once accepted
  // "busy" (full, no memory, stopping), "queued_per_source" (its source has its most jobs
  // waiting) or "spool" (not made durable).
  std::string_view refused;
  std::string why;  // for "spool": the error, for the log
  [[nodiscard]] bool accepted() const noexcept { return refused.empty(); }
};

// What a job queue found in its spool at the start.
struct SOCKECHO_EXPORT SpoolFound {
  std::size_t queued = 0;       // accepted and never started: queued again
  std::size_t retrying = 0;     // waiting to be run again (a retry): waiting again
  std::size_t interrupted = 0;  // running when the server died: queued again, or ended
  std::size_t ended = 0;        // ended and kept, or out of attempts
};

// Where a job is in its life.
enum class JobState {
  queued,    // acknowledged, waiting for a job thread
  running,   // its program runs
  retrying,  // its program asked to be run again (exit 75): waiting for its next run's time
  ended,     // its program ended, or it was cancelled (see JobEnd): kept until forgotten
};

// How a job ended: its own ends, not a connection's outcomes (a job is never reset, say).
enum class JobEnd {
  ok,         // its program exited 0
  failed,     // another exit, a signal, a program that did not start, or attempts used up
  timeout,    // it ran over its runtime limit
  too_large,  // it wrote over its output limit
  cancelled,  // cancelled: never ran again, or its run was killed
};
inline constexpr std::array kJobEnds = {JobEnd::ok, JobEnd::failed, JobEnd::timeout,
                                        JobEnd::too_large, JobEnd::cancelled};
[[nodiscard]] SOCKECHO_EXPORT std::string_view to_string(JobState state) noexcept;
[[nodiscard]] SOCKECHO_EXPORT std::string_view to_string(JobEnd end) noexcept;

// A job as a value: what the queue can say of it.
struct SOCKECHO_EXPORT Job {
  std::string id;
  JobState state = JobState::queued;
  std::optional<JobEnd> end;  // once ended
  unsigned attempts = 0;      // runs started (since a retry command, if any)
  std::size_t input_bytes = 0;
  WallTime accepted{};                  // acknowledged (or queued again by a retry command)
  std::optional<WallTime> first_start;  // its first run's start
  std::optional<WallTime> run_start;    // its latest run's start
  std::optional<WallTime> run_end;      // its latest run's end
  std::optional<WallTime> next_run;     // retrying: when it runs again
  // How its latest run ended, once one has: an exit status or a signal (neither for a program
  // that did not start, or one killed by a limit or a cancel), and a reason where one applies
  // ("interrupted").
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string reason;
  std::uint64_t output_bytes = 0;  // its latest run's stdout, as taken
  std::uint64_t stderr_bytes = 0;  // its latest run's stderr
};

struct SOCKECHO_EXPORT JobStats {
  std::uint64_t accepted = 0;
  std::uint64_t busy = 0;               // refused: the queue was full, or the budget had no room
  std::uint64_t spool = 0;              // refused: the job could not be made durable
  std::uint64_t queued_per_source = 0;  // refused: its source had max_queued_per_source waiting
  std::uint64_t running = 0;
  std::uint64_t queued = 0;
  std::uint64_t retrying = 0;
  std::uint64_t kept = 0;                 // ended and not yet forgotten
  std::optional<WallTime> oldest_queued;  // when the longest-waiting queued job was accepted
  std::array<std::uint64_t, kJobEnds.size()> ends{};  // indexed by JobEnd

  [[nodiscard]] std::uint64_t count(JobEnd end) const noexcept {
    return ends[static_cast<std::size_t>(end)];
  }
};

// "accepted=3 ok=2 failed=1 timeout=0 too_large=0 cancelled=0 busy=0": the counters for a log
// line.
[[nodiscard]] SOCKECHO_EXPORT std::string format_stats(const JobStats& stats);

// A new job id: 128 bits from the kernel's random source (getrandom), unguessable, so knowing an
// id is what lets a client ask about its job; 22 characters of [A-Za-z0-9_-]. Throws
// std::system_error when the random source fails.
[[nodiscard]] SOCKECHO_EXPORT std::string new_job_id();

// Runs jobs on `jobs` threads of its own, started with it, each job with a new_job_id(); a
// thread more waits for retrying jobs' times and forgets ended jobs past their keep.
class SOCKECHO_EXPORT JobQueue final : public Collector {
 public:
  // Throws std::invalid_argument without a program, with zero jobs or zero max_attempts, and
  // std::system_error when the program cannot be found (find_program()).
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

  // The job of this id, from its acknowledgement until it is forgotten (past keep or
  // keep_max); std::nullopt for one forgotten or never issued.
  [[nodiscard]] std::optional<Job> find(std::string_view id) const;
  // The job and its result: the stdout of its run as taken, for an ended job (a cancelled one:
  // as taken until the cancel); empty otherwise. std::nullopt for an id find() does not know.
  [[nodiscard]] std::optional<std::pair<Job, std::string>> result(std::string_view id) const;
  // Cancels a queued or retrying job (it never runs again) or a running one (its program and
  // all it started get SIGTERM, then SIGKILL after the grace) and returns once it has ended,
  // cancelled. Works during a stop. An ended job is left as it is. Returns the job as it then
  // is; std::nullopt for an id find() does not know.
  std::optional<Job> cancel(std::string_view id);
  // Queues an ended job that did not end ok again, attempts from 0, as a new job would be (the
  // queue's bound, the budget, the spool's sync); refused, it is left as it was and the log says
  // why. Any other job is left as it is. Returns the job as it then is; std::nullopt for an id
  // find() does not know.
  std::optional<Job> retry(std::string_view id);

  // Refuses new jobs, runs every one accepted so far to its end (retrying ones at once, their
  // delay dropped), then returns. With a spool, only the running ones end: the queued and
  // retrying ones stay in the spool for the next start.
  void drain();

  // Kills every running job and all it started, and drops the waiting ones: how many of each.
  // Safe from any thread (a second stop signal's callback).
  std::pair<std::size_t, std::size_t> abandon() noexcept;

  [[nodiscard]] JobStats stats() const;
  // sockecho_jobs_*: running, queued, retrying, accepted, refused, run times, and ends by outcome.
  void collect(Exposition& out) const override;

 private:
  struct SOCKECHO_NO_EXPORT Entry;
  // The queued jobs: one line per source, and the sources with jobs waiting in the order of
  // their next turn (one line for all without turns).
  class SOCKECHO_NO_EXPORT Waiting {
   public:
    explicit Waiting(bool turns) : turns_(turns) {}
    void push(Entry* entry);  // at the end of its source's line
    Entry* pop();             // the first of the source whose turn it is; not empty
    void remove(Entry* entry);
    void clear() noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::vector<Entry*> all() const;
    [[nodiscard]] std::optional<WallTime> oldest() const;

   private:
    [[nodiscard]] std::string key(const Entry* entry) const;
    bool turns_;
    std::unordered_map<std::string, std::deque<Entry*>> lines_;
    std::deque<std::string> order_;
    std::size_t size_ = 0;
  };

  void work() noexcept;
  // Queues retrying jobs whose time came and forgets ended ones past keep: a thread of its own.
  void keep_time() noexcept;
  void run(Entry& entry, const std::optional<SpoolTicket>& started);
  [[nodiscard]] ProgramResult start_and_wait(Entry& entry,
                                             const std::optional<SpoolTicket>& started);
  void log_output(const std::string& who, const ProgramResult& result) const;
  // A run's end line: `job id=ID attempt=N ms=... WORDS`.
  void log_run_end(const Entry& entry, std::chrono::microseconds took,
                   std::string_view words) const;
  // After a run: the job ended, waiting to be retried, or (a second stop signal) interrupted.
  // Under the lock; the spool's records for it are added to `records`.
  void after_run(Entry& entry, ProgramResult* result, const std::string& error,
                 std::vector<SpoolRecord>& records);
  // The job ends and is kept until forgotten. Under the lock.
  void end_job(Entry& entry, JobEnd end, WallTime now, std::vector<SpoolRecord>& records);
  // Forgets ended jobs past keep or keep_max, and as many more of the oldest as it takes for
  // the budget to have `room` bytes: whether it has. Under the lock.
  bool forget_kept(WallTime now, std::size_t room, std::vector<SpoolRecord>& records);
  // Whether the budget takes `bytes` more of a run's output, the oldest ended jobs forgotten to
  // make room. Takes the lock.
  bool charge_output(std::size_t bytes);
  void refund_input(Entry& entry) noexcept;
  void refund_output(Entry& entry) noexcept;
  [[nodiscard]] bool full() const noexcept;
  // Jobs queued, retrying or being synced per source: counted up and down as they come and go.
  [[nodiscard]] bool source_full(const std::string& source) const;
  void hold(const std::string& source);
  void release(const std::string& source) noexcept;
  [[nodiscard]] Entry* lookup(std::string_view id) const;
  void replay();
  // Records `record` in the spool without waiting (its durability rides on the next sync); a
  // failure is logged, the job goes on.
  void record(const SpoolRecord& record) const noexcept;
  // Lets `lock` go and appends `records` in the order their changes were made under it.
  void write_spool(std::unique_lock<std::mutex>& lock, const std::vector<SpoolRecord>& records);
  // Lets `lock` go and appends one record, in order: its ticket, or none when it failed (logged).
  std::optional<SpoolTicket> append_ordered(std::unique_lock<std::mutex>& lock,
                                            const SpoolRecord& record);
  // Waits for an appended record to be durable: false when it is not (logged).
  bool wait_durable(const std::optional<SpoolTicket>& ticket,
                    const SpoolRecord& record) const noexcept;
  void log_spool_error(const SpoolRecord& record, const char* what) const noexcept;

  JobOptions options_;
  std::string path_;  // the program, found once
  mutable std::mutex mutex_;
  // Held from a change of a job under mutex_ until its record is appended to the spool, so the
  // spool gets every job's records in the order of its changes. Taken after mutex_, never before.
  mutable std::mutex spool_writing_;
  // A job to run, a run ended, a stop: what the job threads and a drain wait for (a new job
  // wakes one job thread).
  std::condition_variable changed_;
  std::condition_variable ended_;  // a job ended: what a cancel waits for
  std::condition_variable timer_;  // the earliest retry or keep changed, or a stop
  // Every job known, from its acknowledgement until it is forgotten (nodes: an entry stays where
  // it is while other jobs come and go, so a running job's thread holds it by reference).
  std::unordered_map<std::string, std::unique_ptr<Entry>> jobs_;
  Waiting waiting_;                                    // queued, in the order they start
  std::unordered_map<std::string, std::size_t> held_;  // queued, retrying or syncing, by source
  std::multimap<WallTime, Entry*> retrying_;           // by the time of their next run
  // Ended jobs by the time of their end; a place is stale once its job was retried or forgotten.
  std::deque<std::pair<WallTime, std::string>> kept_;
  std::size_t pending_ = 0;  // accepted into a slot, waiting for their spool record's sync
  SpoolFound found_;
  DurationHistogram acks_;  // from a submission to its answer, the sync included
  DurationHistogram runs_;  // each run, from its start to its end
  bool closed_ = false;     // no new jobs
  bool abandoned_ = false;  // no more jobs started
  JobStats stats_;
  std::vector<std::thread> threads_;
};

// A Handler that queues the request as a job and answers prefix + "accepted ID\n" at once (its
// connection line with job=ID), or
// prefix + "busy\n" (outcome refused, reason=busy) when the queue is full. The program gets the
// request's environment (exec_environment()).
[[nodiscard]] SOCKECHO_EXPORT Handler background_handler(JobQueue& queue, std::string prefix);

}  // namespace sockecho
