#include "sockecho/jobs.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "program_log.hpp"
#include "signal_mask.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"

namespace sockecho {

namespace {

// "1234.567" milliseconds, as connection lines have them.
std::string milliseconds(std::chrono::microseconds duration) {
  const auto us = duration.count();
  std::string frac = std::to_string(us % 1000);
  frac.insert(0, 3 - frac.size(), '0');
  return std::to_string(us / 1000) + "." + frac;
}

// A program's end, as a job's end: indexed by Outcome (a program ends ok, failed, timeout or
// too_large; anything else there is no job's end and counts as failed).
constexpr std::array<JobEnd, kOutcomeCount> kJobEndOf = {
    JobEnd::ok,     JobEnd::timeout, JobEnd::too_large, JobEnd::failed,
    JobEnd::failed, JobEnd::failed,  JobEnd::failed};
static_assert(kOutcomes[1] == Outcome::timeout && kOutcomes[2] == Outcome::too_large);

JobEnd job_end(Outcome outcome) noexcept { return kJobEndOf[static_cast<std::size_t>(outcome)]; }

SpoolTime wall_now() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

SpoolEnd spool_end(JobEnd end) noexcept {
  switch (end) {
    case JobEnd::ok:
      return SpoolEnd::ok;
    case JobEnd::failed:
      return SpoolEnd::failed;
    case JobEnd::timeout:
      return SpoolEnd::timeout;
    case JobEnd::too_large:
      return SpoolEnd::too_large;
  }
  return SpoolEnd::failed;
}

constexpr std::array<std::string_view, 3> kJobStateNames = {"queued", "running", "ended"};
constexpr std::array<std::string_view, kJobEnds.size()> kJobEndNames = {"ok", "failed", "timeout",
                                                                        "too_large"};

}  // namespace

std::string_view to_string(JobState state) noexcept {
  return kJobStateNames[static_cast<std::size_t>(state)];
}

std::string_view to_string(JobEnd end) noexcept {
  return kJobEndNames[static_cast<std::size_t>(end)];
}

std::string format_stats(const JobStats& stats) {
  std::string line = "accepted=" + std::to_string(stats.accepted);
  for (const JobEnd end : kJobEnds) {
    line += " " + std::string(to_string(end)) + "=" + std::to_string(stats.count(end));
  }
  return line + " busy=" + std::to_string(stats.busy);
}

std::string new_job_id() {
  // 128 bits from the kernel's random source (getrandom blocks only until it is first seeded,
  // at boot), in the URL-safe base64 alphabet without padding: 22 characters.
  std::array<unsigned char, 16> bits{};
  std::size_t got = 0;
  while (got < bits.size()) {
    const ssize_t n = ::getrandom(bits.data() + got, bits.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw os_error(errno, "getrandom (a job id)");
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string id;
  id.reserve(22);
  std::uint32_t pending = 0;
  int pending_bits = 0;
  for (const unsigned char byte : bits) {
    pending = (pending << 8U) | byte;
    pending_bits += 8;
    while (pending_bits >= 6) {
      pending_bits -= 6;
      id += kAlphabet[(pending >> static_cast<unsigned>(pending_bits)) & 63U];
    }
  }
  if (pending_bits > 0) id += kAlphabet[(pending << static_cast<unsigned>(6 - pending_bits)) & 63U];
  return id;
}

JobQueue::JobQueue(JobOptions options) : options_(std::move(options)) {
  if (options_.argv.empty()) throw std::invalid_argument("JobQueue: no program");
  if (options_.jobs == 0) throw std::invalid_argument("JobQueue: jobs must be at least 1");
  path_ = find_program(options_.argv[0]);
  if (options_.spool) replay();
  threads_.reserve(options_.jobs);
  // The job threads block every signal from their first instruction (they inherit this mask),
  // so a signal meant for the process's own waiter is never taken by one of them. The programs
  // they start get an empty mask of their own.
  try {
    const detail::BlockedSignals blocked;
    for (unsigned i = 0; i < options_.jobs; ++i) threads_.emplace_back([this] { work(); });
  } catch (...) {
    (void)abandon();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

JobQueue::~JobQueue() {
  (void)abandon();
  for (std::thread& t : threads_) t.join();
}

Submission JobQueue::submit(std::string input, std::vector<std::string> env, std::string source) {
  const Clock::time_point arrived = Clock::now();
  Submission answer;
  answer.id = new_job_id();  // its system call outside the lock
  const std::size_t bytes = input.size();
  // Queues the job; under the lock.
  const auto queue = [&] {
    Job job{answer.id, JobState::queued, std::nullopt, 0, bytes, Clock::now()};
    waiting_.push_back(Work{std::move(job), std::move(input), std::move(env)});
    ++stats_.accepted;
    stats_.queued = waiting_.size();
  };
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    const bool full =
        waiting_.size() + pending_ >= options_.queue + (options_.jobs - stats_.running);
    if (closed_ || full || (options_.budget && !options_.budget->try_charge(bytes))) {
      ++stats_.busy;
      answer.refused = "busy";
      answer.id.clear();
      return answer;
    }
    if (options_.spool) {
      ++pending_;  // its slot is held while its record is synced, outside the lock
    } else {
      queue();
    }
  }
  if (options_.spool) {
    // Durable before it is queued: a job is never acknowledged, nor run, unless on disk.
    bool durable = false;
    try {
      options_.spool->commit(SpoolAccepted{answer.id, input, env, std::move(source), wall_now()});
      durable = true;
    } catch (const std::exception& e) {
      answer.refused = "spool";
      answer.why = e.what();
      answer.id.clear();
    }
    bool draining = false;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      --pending_;
      draining = closed_;
      if (durable) {
        queue();
      } else {
        if (options_.budget) options_.budget->refund(bytes);
        ++stats_.spool;
      }
    }
    // A drain (closed_ set) waits for pending_ to reach 0 among the job threads; otherwise a
    // job to run wants one job thread, not every one of them.
    if (draining) {
      changed_.notify_all();
    } else if (durable) {
      changed_.notify_one();
    }
    if (!durable) return answer;
  } else {
    changed_.notify_one();
  }
  acks_.observe(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - arrived));
  return answer;
}

std::optional<std::string> JobQueue::submit(std::string input, std::vector<std::string> env) {
  Submission answer = submit(std::move(input), std::move(env), {});
  if (!answer.accepted()) return std::nullopt;
  return std::move(answer.id);
}

void JobQueue::record(const SpoolRecord& record) const noexcept {
  try {
    (void)options_.spool->append(record);
  } catch (const std::exception& e) {
    try {
      options_.log.event(LogLevel::quiet,
                         "spool: job id=" + record_id(record) + " error=" + log_quoted(e.what()));
    } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the job goes on
    }
  }
}

void JobQueue::replay() {
  const SpoolTime now = wall_now();
  for (const SpooledJob& spooled : options_.spool->replayed()) {
    if (spooled.end) {  // ended, and not forgotten before the server stopped: no --keep yet
      ++found_.ended;
      record(SpoolForgotten{spooled.id});
      continue;
    }
    if (spooled.running) {
      ++found_.interrupted;
      if (spooled.attempts >= options_.max_attempts) {
        // Out of attempts: a job that kills the server every time is not run again.
        ++found_.ended;
        SpoolEnded end{spooled.id, SpoolEnd::failed, -1, 0, "interrupted", 0, 0, {}, now};
        record(end);
        record(SpoolForgotten{spooled.id});
        ++stats_.ends[static_cast<std::size_t>(JobEnd::failed)];
        options_.log.event(LogLevel::quiet, "job id=" + spooled.id +
                                                " attempt=" + std::to_string(spooled.attempts) +
                                                " ms=0.000 failed reason=interrupted");
        continue;
      }
    } else if (spooled.next_run) {
      ++found_.retrying;
    } else {
      ++found_.queued;
    }
    const bool charged = !options_.budget || options_.budget->try_charge(spooled.request.size());
    Job job{spooled.id,       JobState::queued,       std::nullopt,
            spooled.attempts, spooled.request.size(), Clock::now()};
    // Queued even past --queue: every acknowledged job runs; new ones are busy until it is below.
    waiting_.push_back(Work{std::move(job), spooled.request, spooled.env, charged});
  }
  stats_.queued = waiting_.size();
}

std::optional<Job> JobQueue::find(std::string_view id) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto running = running_.find(std::string(id));
  if (running != running_.end()) return running->second.job;
  for (const Work& waiting : waiting_) {
    if (waiting.job.id == id) return waiting.job;
  }
  return std::nullopt;
}

void JobQueue::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  closed_ = true;
  const std::size_t left = waiting_.size() + stats_.running;
  if (left > 0 && options_.log.enabled(LogLevel::normal)) {
    options_.log.event(LogLevel::normal,
                       std::string(options_.spool ? "jobs: stopping" : "jobs: draining") +
                           " running=" + std::to_string(stats_.running) +
                           " queued=" + std::to_string(waiting_.size()) +
                           (options_.spool ? " (queued jobs stay in the spool)" : ""));
  }
  changed_.notify_all();
  // With a spool the queued jobs stay there for the next start: only the running ones end.
  changed_.wait(lock, [this] {
    return abandoned_ || (pending_ == 0 && stats_.running == 0 &&
                          (options_.spool != nullptr || waiting_.empty()));
  });
}

std::pair<std::size_t, std::size_t> JobQueue::abandon() noexcept {
  const std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  abandoned_ = true;
  const std::size_t dropped = waiting_.size();
  for (const Work& waiting : waiting_) refund(waiting);
  waiting_.clear();
  stats_.queued = 0;
  std::size_t running = 0;
  for (auto& [id, job] : running_) {
    if (job.program != nullptr) job.program->cancel();
    ++running;
  }
  changed_.notify_all();
  return {running, dropped};
}

JobStats JobQueue::stats() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void JobQueue::work() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return abandoned_ || closed_ || !waiting_.empty(); });
    if (abandoned_ || waiting_.empty() || (closed_ && options_.spool)) {
      if (abandoned_ || closed_) return;
      continue;
    }
    Work work = std::move(waiting_.front());
    waiting_.pop_front();
    stats_.queued = waiting_.size();
    ++stats_.running;
    lock.unlock();
    run(work);
    lock.lock();
    --stats_.running;
    changed_.notify_all();
  }
}

void JobQueue::run(Work& work) {
  try {
    const ProgramResult result = start_and_wait(work);
    ended(work, job_end(result.outcome()), &result);
  } catch (const std::exception& e) {  // the program could not start
    options_.log.event(LogLevel::quiet,
                       "job id=" + work.job.id + " ms=0.000 error=" + log_quoted(e.what()));
    ended(work, JobEnd::failed, nullptr);
  } catch (...) {
    ended(work, JobEnd::failed, nullptr);
  }
}

ProgramResult JobQueue::start_and_wait(Work& work) {
  // Running (and findable as such) from here, before the program starts, until ended().
  Running& running = [&]() -> Running& {
    const std::lock_guard<std::mutex> lock(mutex_);
    work.job.state = JobState::running;
    ++work.job.attempts;  // counted as it becomes running, so it is never seen running with none
    return running_[work.job.id] = Running{work.job, nullptr};
  }();
  std::vector<std::string> env = std::move(work.env);
  env.push_back("SOCKECHO_JOB_ID=" + work.job.id);
  env.push_back("SOCKECHO_JOB_ATTEMPT=" + std::to_string(work.job.attempts));
  if (options_.spool) {
    // Durable before the program starts: a run the server's death cuts short is counted.
    try {
      options_.spool->commit(SpoolStarted{work.job.id, work.job.attempts, wall_now()});
    } catch (const std::exception& e) {
      options_.log.event(LogLevel::quiet,
                         "spool: job id=" + work.job.id + " error=" + log_quoted(e.what()));
    }
  }
  Program program(options_.argv, env, path_);
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    running.program = &program;
    if (abandoned_) program.cancel();
  }
  struct Forget {  // the program goes out of reach before it is destroyed, however run() ends
    JobQueue& queue;
    Running& running;
    ~Forget() {
      const std::lock_guard<std::mutex> lock(queue.mutex_);
      running.program = nullptr;
    }
  } forget{*this, running};

  const std::string who = "job id=" + work.job.id;
  ProgramResult result =
      detail::run_logged(program, work.input, options_.limits, options_.log, who);
  log_output(who, result);
  return result;
}

void JobQueue::log_output(const std::string& who, const ProgramResult& result) const {
  // Its stdout has no client to go to: it goes to the log, within the same bound as stderr.
  detail::ProgramLog stdout_lines(options_.log, who, "stdout", options_.limits.max_log);
  std::string_view out = result.output;
  while (!out.empty()) {
    const std::size_t end = out.find('\n');
    stdout_lines.line(out.substr(0, end));
    out = end == std::string_view::npos ? std::string_view() : out.substr(end + 1);
  }
  stdout_lines.finish();
  options_.log.event(result.ok() ? LogLevel::normal : LogLevel::quiet,
                     who + " ms=" + milliseconds(result.duration) + " " + result.describe());
}

void JobQueue::ended(const Work& work, JobEnd end, const ProgramResult* result) {
  refund(work);
  // A run a second stop signal killed is interrupted, not ended: it runs again at the next start.
  bool abandoned = false;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    abandoned = abandoned_;
  }
  if (options_.spool && !abandoned) {
    SpoolEnded record_end{work.job.id, spool_end(end), -1, 0, {}, 0, 0, {}, wall_now()};
    if (result != nullptr) {
      if (result->end == ProgramResult::End::exited) record_end.exit_code = result->code;
      if (result->end == ProgramResult::End::signaled) record_end.signal = result->code;
      record_end.stdout_bytes = result->output.size();
    }
    record(record_end);
    record(SpoolForgotten{work.job.id});  // until --keep: an ended job leaves the spool
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  running_.erase(work.job.id);  // forgotten once it ends
  ++stats_.ends[static_cast<std::size_t>(end)];
}

void JobQueue::refund(const Work& work) noexcept {
  if (options_.budget && work.charged) options_.budget->refund(work.job.input_bytes);
}

void JobQueue::collect(Exposition& out) const {
  const JobStats j = stats();
  out.single("sockecho_jobs_running", "gauge", "Background jobs running now.", j.running);
  out.single("sockecho_jobs_queued", "gauge", "Background jobs waiting to run.", j.queued);
  out.single("sockecho_jobs_accepted_total", "counter", "Background jobs acknowledged.",
             j.accepted);
  out.family("sockecho_jobs_refused_total", "counter",
             "Background jobs refused: the queue or memory was full, or it was stopping (busy); "
             "the job could not be made durable (spool).");
  out.sample("sockecho_jobs_refused_total", label("reason", "busy"), j.busy);
  out.sample("sockecho_jobs_refused_total", label("reason", "spool"), j.spool);
  acks_.collect(
      out, "sockecho_jobs_ack_seconds",
      "From a job's request to its acknowledgement (the spool's sync included), seconds.");
  if (options_.spool) {
    out.single("sockecho_spool_bytes", "gauge", "Bytes of the spool's files.",
               options_.spool->bytes());
    out.single("sockecho_spool_syncs_total", "counter",
               "Syncs of the spool's files (one covers every job waiting for it).",
               options_.spool->syncs());
  }
  out.family("sockecho_jobs_total", "counter", "Background jobs finished, by outcome.");
  for (const JobEnd end : kJobEnds) {
    out.sample("sockecho_jobs_total", label("outcome", to_string(end)), j.count(end));
  }
}

Handler background_handler(JobQueue& queue, std::string prefix) {
  return [&queue, prefix = std::move(prefix)](const Request& request, Reply& reply) {
    const Submission answer = queue.submit(std::string(request.bytes()), exec_environment(request),
                                           request.peer().to_string());
    reply.append_ref(prefix);
    if (answer.accepted()) {
      reply.append("accepted " + answer.id + "\n");
      // The conn line names the job it acknowledged.
      reply.set_outcome(Outcome::ok, "job=" + answer.id);
    } else {
      reply.append_ref("busy\n");
      std::string fields = "reason=" + std::string(answer.refused);
      if (!answer.why.empty()) fields += " error=" + log_quoted(answer.why);
      reply.set_outcome(Outcome::refused, fields);
    }
  };
}

}  // namespace sockecho
