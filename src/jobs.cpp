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

WallTime wall_now() {
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
    case JobEnd::cancelled:
      return SpoolEnd::cancelled;
  }
  return SpoolEnd::failed;
}

JobEnd job_end_of(SpoolEnd end) noexcept {
  switch (end) {
    case SpoolEnd::ok:
      return JobEnd::ok;
    case SpoolEnd::failed:
      return JobEnd::failed;
    case SpoolEnd::timeout:
      return JobEnd::timeout;
    case SpoolEnd::too_large:
      return JobEnd::too_large;
    case SpoolEnd::cancelled:
      return JobEnd::cancelled;
  }
  return JobEnd::failed;
}

constexpr std::array<std::string_view, 4> kJobStateNames = {"queued", "running", "retrying",
                                                            "ended"};
constexpr std::array<std::string_view, kJobEnds.size()> kJobEndNames = {"ok", "failed", "timeout",
                                                                        "too_large", "cancelled"};

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

struct JobQueue::Entry {
  Job job;
  std::string input;  // its request (without a spool: with one, it is there)
  std::vector<std::string> env;
  std::string source;
  bool charged = true;  // its input is charged to the budget (a replayed one may not be)
  std::string output;   // its latest run's stdout (without a spool: with one, it is there)
  std::size_t output_charged = 0;  // bytes of output charged to the budget
  Program* program = nullptr;      // while its program runs
  bool cancelling = false;         // a cancel asked for it: its run ends cancelled
};

std::string job_source(const Address& peer) {
  const Address unmapped = peer.unmapped();
  if (unmapped.family() != AF_UNIX) return unmapped.host();
  if (unmapped.credentials()) return "uid=" + std::to_string(unmapped.credentials()->uid);
  return "unix:" + unmapped.path();
}

void JobQueue::Waiting::push(Entry* entry) {
  std::string line = key(entry);
  std::deque<Entry*>& jobs = lines_[line];
  if (jobs.empty()) order_.push_back(std::move(line));  // its turn comes after the others'
  jobs.push_back(entry);
  ++size_;
}

JobQueue::Entry* JobQueue::Waiting::pop() {
  std::string line = std::move(order_.front());
  order_.pop_front();
  const auto it = lines_.find(line);
  Entry* entry = it->second.front();
  it->second.pop_front();
  if (it->second.empty()) {
    lines_.erase(it);
  } else {
    order_.push_back(std::move(line));  // its next job waits for the other sources' turns
  }
  --size_;
  return entry;
}

void JobQueue::Waiting::remove(Entry* entry) {
  const std::string line = key(entry);
  const auto it = lines_.find(line);
  if (it == lines_.end()) return;
  const auto at = std::find(it->second.begin(), it->second.end(), entry);
  if (at == it->second.end()) return;
  it->second.erase(at);
  --size_;
  if (it->second.empty()) {
    lines_.erase(it);
    order_.erase(std::find(order_.begin(), order_.end(), line));
  }
}

void JobQueue::Waiting::clear() noexcept {
  lines_.clear();
  order_.clear();
  size_ = 0;
}

std::vector<JobQueue::Entry*> JobQueue::Waiting::all() const {
  std::vector<Entry*> out;
  out.reserve(size_);
  for (const auto& [line, jobs] : lines_) out.insert(out.end(), jobs.begin(), jobs.end());
  return out;
}

std::optional<WallTime> JobQueue::Waiting::oldest() const {
  // Each line is in the order its jobs came, so its first is its oldest (a retried one may
  // have come later than it was accepted: close enough for a gauge).
  std::optional<WallTime> out;
  for (const auto& [line, jobs] : lines_) {
    const WallTime accepted = jobs.front()->job.accepted;
    if (!out || accepted < *out) out = accepted;
  }
  return out;
}

std::string JobQueue::Waiting::key(const Entry* entry) const {
  return turns_ ? entry->source : std::string();
}

bool JobQueue::source_full(const std::string& source) const {
  if (options_.max_queued_per_source == 0) return false;
  const auto it = held_.find(source);
  return it != held_.end() && it->second >= options_.max_queued_per_source;
}

void JobQueue::hold(const std::string& source) { ++held_[source]; }

void JobQueue::release(const std::string& source) noexcept {
  const auto it = held_.find(source);
  if (it == held_.end()) return;
  if (--it->second == 0) held_.erase(it);
}

JobQueue::JobQueue(JobOptions options) : options_(std::move(options)), waiting_(options_.turns) {
  if (options_.argv.empty()) throw std::invalid_argument("JobQueue: no program");
  if (options_.jobs == 0) throw std::invalid_argument("JobQueue: jobs must be at least 1");
  if (options_.max_attempts == 0) {
    throw std::invalid_argument("JobQueue: max_attempts must be at least 1");
  }
  path_ = find_program(options_.argv[0]);
  if (options_.spool) replay();
  threads_.reserve(options_.jobs + 1);
  // The job threads block every signal from their first instruction (they inherit this mask),
  // so a signal meant for the process's own waiter is never taken by one of them. The programs
  // they start get an empty mask of their own.
  try {
    const detail::BlockedSignals blocked;
    for (unsigned i = 0; i < options_.jobs; ++i) threads_.emplace_back([this] { work(); });
    threads_.emplace_back([this] { keep_time(); });
  } catch (...) {
    (void)abandon();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

JobQueue::~JobQueue() {
  (void)abandon();
  for (std::thread& t : threads_) t.join();
  // The budget may outlive the queue: what its jobs still hold goes back.
  for (auto& [id, e] : jobs_) {
    refund_input(*e);
    refund_output(*e);
  }
}

bool JobQueue::full() const noexcept {
  // A retrying job holds its slot as a queued one does; a job being synced holds one too.
  return waiting_.size() + retrying_.size() + pending_ >=
         options_.queue + (options_.jobs - stats_.running);
}

Submission JobQueue::submit(std::string input, std::vector<std::string> env, std::string source) {
  const Clock::time_point arrived = Clock::now();
  Submission answer;
  auto entry = std::make_unique<Entry>();
  entry->job.id = new_job_id();  // its system call outside the lock
  entry->job.input_bytes = input.size();
  entry->job.accepted = wall_now();
  entry->input = std::move(input);
  entry->env = std::move(env);
  entry->source = std::move(source);
  answer.id = entry->job.id;
  const std::size_t bytes = entry->job.input_bytes;
  Entry* queued = nullptr;
  // Queues the job; under the lock.
  const auto queue = [&] {
    queued = entry.get();
    jobs_.emplace(queued->job.id, std::move(entry));
    waiting_.push(queued);
    ++stats_.accepted;
  };
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!closed_ && source_full(entry->source)) {
      ++stats_.queued_per_source;
      answer.refused = "queued_per_source";
      answer.id.clear();
      return answer;
    }
    if (closed_ || full() || (options_.budget && !options_.budget->try_charge(bytes))) {
      ++stats_.busy;
      answer.refused = "busy";
      answer.id.clear();
      return answer;
    }
    hold(entry->source);  // its share of its source's queue, from now (its sync included)
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
      options_.spool->commit(SpoolAccepted{entry->job.id, entry->input, entry->env, entry->source,
                                           entry->job.accepted});
      durable = true;
      // The spool keeps the request for the job's runs: one copy in memory, not two.
      entry->input = std::string();
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
        release(entry->source);
        ++stats_.spool;
      }
    }
    if (draining) changed_.notify_all();  // a drain waits for pending_ to reach 0
    if (!durable) return answer;
  }
  changed_.notify_one();
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
    log_spool_error(record, e.what());
  }
}

void JobQueue::write_spool(std::unique_lock<std::mutex>& lock,
                           const std::vector<SpoolRecord>& records) {
  if (!options_.spool || records.empty()) {
    lock.unlock();
    return;
  }
  // The records go to the spool in the order their changes were made under the lock: taking
  // the writing lock before letting the other go keeps that order across threads.
  const std::lock_guard<std::mutex> writing(spool_writing_);
  lock.unlock();
  for (const SpoolRecord& r : records) record(r);
}

std::optional<SpoolTicket> JobQueue::append_ordered(std::unique_lock<std::mutex>& lock,
                                                    const SpoolRecord& record) {
  std::unique_lock<std::mutex> writing(spool_writing_);
  lock.unlock();
  try {
    return options_.spool->append(record);
  } catch (const std::exception& e) {
    writing.unlock();
    log_spool_error(record, e.what());
    return std::nullopt;
  }
}

bool JobQueue::wait_durable(const std::optional<SpoolTicket>& ticket,
                            const SpoolRecord& record) const noexcept {
  if (!ticket) return false;
  try {
    options_.spool->wait(*ticket);
    return true;
  } catch (const std::exception& e) {
    log_spool_error(record, e.what());
    return false;
  }
}

void JobQueue::log_spool_error(const SpoolRecord& record, const char* what) const noexcept {
  try {
    options_.log.event(LogLevel::quiet,
                       "spool: job id=" + record_id(record) + " error=" + log_quoted(what));
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the job goes on
  }
}

void JobQueue::replay() {
  const WallTime now = wall_now();
  std::vector<SpoolRecord> records;
  for (const SpooledJob& spooled : options_.spool->replayed()) {
    auto entry = std::make_unique<Entry>();
    Entry& e = *entry;
    e.job.id = spooled.id;
    e.job.input_bytes = spooled.request.size();
    e.job.accepted = spooled.requeued.value_or(spooled.accepted);
    e.job.attempts = spooled.attempts;
    e.job.first_start = spooled.first_started;
    e.job.run_start = spooled.started;
    e.env = spooled.env;
    e.source = spooled.source;
    e.charged = !options_.budget || options_.budget->try_charge(spooled.request.size());
    Entry* const at = entry.get();
    jobs_.emplace(spooled.id, std::move(entry));
    if (spooled.end) {  // ended and kept
      ++found_.ended;
      const SpoolEnded& end = *spooled.end;
      e.job.state = JobState::ended;
      e.job.end = job_end_of(end.state);
      if (end.exit_code >= 0) e.job.exit_code = end.exit_code;
      if (end.signal != 0) e.job.signal = end.signal;
      e.job.reason = end.reason;
      e.job.output_bytes = end.stdout_bytes;
      e.job.stderr_bytes = end.stderr_bytes;
      e.job.run_end = end.time;
      if (e.job.end == JobEnd::ok) {  // only a job that did not end ok can be retried
        refund_input(e);
        e.input = std::string();
        e.env = std::vector<std::string>();
      }
      if (options_.budget && !end.output.empty()) {
        // Best effort: a restart with a smaller budget forgets what does not fit.
        if (options_.budget->try_charge(end.output.size())) {
          e.output_charged = end.output.size();
        }
      }
      ++stats_.kept;
      kept_.emplace_back(end.time, spooled.id);
      continue;
    }
    if (spooled.running) {
      ++found_.interrupted;
      if (spooled.attempts >= options_.max_attempts) {
        // Out of attempts: a job that kills the server every time is not run again.
        ++found_.ended;
        e.job.reason = "interrupted";
        e.job.run_end = now;
        options_.log.event(LogLevel::quiet, "job id=" + spooled.id +
                                                " attempt=" + std::to_string(spooled.attempts) +
                                                " ms=0.000 reason=interrupted");
        end_job(e, JobEnd::failed, now, records);
        continue;
      }
      e.job.reason = "interrupted";
      e.job.run_end = now;  // cut short by the server's end, at the latest now
    } else if (spooled.next_run) {
      ++found_.retrying;
      e.job.state = JobState::retrying;
      e.job.next_run = spooled.next_run;
      e.job.exit_code = kRetryExit;
      e.job.run_end = e.job.run_start;  // when its run ended is not kept: its run_ms reads 0
      retrying_.emplace(*spooled.next_run, at);
      hold(e.source);  // a replayed job keeps its source, and its share
      continue;
    } else {
      ++found_.queued;
    }
    // Queued even past --queue: every acknowledged job runs; new ones are busy until it is below.
    e.job.state = JobState::queued;
    waiting_.push(at);
    hold(e.source);
  }
  // The ended ones by the time of their end, so the oldest is forgotten first.
  std::stable_sort(kept_.begin(), kept_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  (void)forget_kept(now, 0, records);
  for (const SpoolRecord& r : records) record(r);
}

JobQueue::Entry* JobQueue::lookup(std::string_view id) const {
  const auto it = jobs_.find(std::string(id));
  return it == jobs_.end() ? nullptr : it->second.get();
}

std::optional<Job> JobQueue::find(std::string_view id) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  const Entry* e = lookup(id);
  if (e == nullptr) return std::nullopt;
  return e->job;
}

std::optional<std::pair<Job, std::string>> JobQueue::result(std::string_view id) const {
  std::unique_lock<std::mutex> lock(mutex_);
  const Entry* e = lookup(id);
  if (e == nullptr) return std::nullopt;
  std::pair<Job, std::string> out{e->job, {}};
  if (e->job.state != JobState::ended) return out;
  if (!options_.spool) {
    out.second = e->output;
    return out;
  }
  // With a spool the output is kept there, once: its `ended` record is written after the lock
  // is let go, under the writing lock, which is taken before that.
  const std::lock_guard<std::mutex> writing(spool_writing_);
  lock.unlock();
  out.second = options_.spool->output(id).value_or(std::string());
  return out;
}

std::optional<Job> JobQueue::cancel(std::string_view id) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* e = lookup(id);
  if (e == nullptr) return std::nullopt;
  const std::string key(id);
  std::vector<SpoolRecord> records;
  switch (e->job.state) {
    case JobState::ended:
      return e->job;
    case JobState::queued:
      waiting_.remove(e);
      release(e->source);
      break;
    case JobState::retrying: {
      // Waiting for its time, or (its time come) for a job thread.
      bool found = false;
      const auto [first, last] = retrying_.equal_range(e->job.next_run.value_or(WallTime{}));
      for (auto it = first; it != last; ++it) {
        if (it->second == e) {
          retrying_.erase(it);
          found = true;
          break;
        }
      }
      if (!found) waiting_.remove(e);
      release(e->source);
      break;
    }
    case JobState::running: {
      // Its subtree is asked to end, then killed after the grace; its thread ends it cancelled.
      e->cancelling = true;
      if (e->program != nullptr) e->program->terminate();
      // (A second stop signal interrupts it instead: no end comes then.)
      const auto done = [&] {
        const Entry* now = lookup(key);
        return abandoned_ || now == nullptr || now->job.state != JobState::running;
      };
      if (!ended_.wait_for(lock, options_.limits.grace, done)) {
        Entry* still = lookup(key);
        if (still != nullptr && still->program != nullptr) still->program->cancel();
        ended_.wait(lock, done);
      }
      const Entry* ended = lookup(key);
      if (ended == nullptr) return std::nullopt;
      return ended->job;
    }
  }
  // Queued or retrying: it never runs (again).
  log_run_end(*e, std::chrono::microseconds(0), "cancelled");
  end_job(*e, JobEnd::cancelled, wall_now(), records);
  Job job = e->job;
  write_spool(lock, records);
  return job;
}

std::optional<Job> JobQueue::retry(std::string_view id) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* e = lookup(id);
  if (e == nullptr) return std::nullopt;
  if (e->job.state != JobState::ended || e->job.end == JobEnd::ok) return e->job;
  const auto refuse = [&](std::string_view why) {
    options_.log.event(LogLevel::quiet,
                       "job id=" + e->job.id + " retry refused reason=" + std::string(why));
    return e->job;
  };
  if (closed_) return refuse("stopping");
  if (full()) return refuse("busy");
  if (source_full(e->source)) return refuse("queued_per_source");
  if (!e->charged) {
    if (options_.budget && !options_.budget->try_charge(e->job.input_bytes)) {
      return refuse("memory");
    }
    e->charged = true;
  }
  // Queued again as a new job: attempts from 0, its last run's end and output gone.
  const Job before = e->job;
  const WallTime now = wall_now();
  e->job = Job();
  e->job.id = before.id;
  e->job.input_bytes = before.input_bytes;
  e->job.accepted = now;
  e->job.state = JobState::queued;
  --stats_.kept;
  if (options_.budget) options_.budget->refund(e->output_charged);
  e->output_charged = 0;
  e->output.clear();
  e->cancelling = false;
  hold(e->source);
  if (options_.spool) {
    // Durable before it is answered, as a new job's acceptance is; its slot held meanwhile.
    ++pending_;
    const std::string key = e->job.id;
    const SpoolRecord requeued = SpoolRequeued{key, now};
    const std::optional<SpoolTicket> ticket = append_ordered(lock, requeued);
    const bool durable = wait_durable(ticket, requeued);
    lock.lock();
    --pending_;
    e = lookup(key);
    if (e == nullptr) return std::nullopt;
    if (!durable && e->job.state == JobState::queued) {
      release(e->source);
      e->job = before;
      ++stats_.kept;
      kept_.emplace_back(before.run_end.value_or(now), key);
      changed_.notify_all();
      return refuse("spool");
    }
    if (e->job.state != JobState::queued) return e->job;  // cancelled meanwhile
  }
  waiting_.push(e);
  options_.log.event(LogLevel::normal, "job id=" + e->job.id + " retried");
  changed_.notify_all();
  return e->job;
}

void JobQueue::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  closed_ = true;
  const std::size_t left = waiting_.size() + retrying_.size() + stats_.running;
  if (left > 0 && options_.log.enabled(LogLevel::normal)) {
    options_.log.event(LogLevel::normal,
                       std::string(options_.spool ? "jobs: stopping" : "jobs: draining") +
                           " running=" + std::to_string(stats_.running) +
                           " queued=" + std::to_string(waiting_.size()) +
                           " retrying=" + std::to_string(retrying_.size()) +
                           (options_.spool ? " (queued and retrying jobs stay in the spool)" : ""));
  }
  if (!options_.spool) {
    // Nothing keeps them past this process: they run now, their delay dropped.
    for (auto& [time, e] : retrying_) waiting_.push(e);  // retrying until they start
    retrying_.clear();
  }
  changed_.notify_all();
  timer_.notify_all();
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
  const std::size_t dropped = waiting_.size() + retrying_.size();
  for (Entry* e : waiting_.all()) refund_input(*e);
  for (auto& [time, e] : retrying_) refund_input(*e);
  waiting_.clear();
  retrying_.clear();
  held_.clear();
  std::size_t running = 0;
  for (auto& [id, e] : jobs_) {
    if (e->job.state != JobState::running) continue;
    if (e->program != nullptr) e->program->cancel();
    ++running;
  }
  changed_.notify_all();
  ended_.notify_all();
  timer_.notify_all();
  return {running, dropped};
}

JobStats JobQueue::stats() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  JobStats out = stats_;
  out.queued = waiting_.size();
  out.oldest_queued = waiting_.oldest();
  out.retrying = retrying_.size();
  return out;
}

void JobQueue::work() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return abandoned_ || closed_ || !waiting_.empty(); });
    // With a spool, a stop leaves the queued jobs there; without one, every one runs first.
    if (abandoned_ || (closed_ && (options_.spool || waiting_.empty()))) return;
    if (waiting_.empty()) continue;
    Entry& e = *waiting_.pop();
    release(e.source);
    const WallTime now = wall_now();
    e.job.state = JobState::running;
    ++e.job.attempts;  // counted as it becomes running, so it is never seen running with none
    if (!e.job.first_start) e.job.first_start = now;
    e.job.run_start = now;
    e.job.run_end.reset();
    e.job.next_run.reset();
    ++stats_.running;
    std::optional<SpoolTicket> started;
    if (options_.spool) {
      started = append_ordered(lock, SpoolStarted{e.job.id, e.job.attempts, now});
    } else {
      lock.unlock();
    }
    run(e, started);
    lock.lock();
  }
}

void JobQueue::keep_time() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!abandoned_) {
    const WallTime now = wall_now();
    // Retrying jobs whose time came wait for a job thread with the queued ones, in their
    // source's turn, still retrying until their run starts (a stop with a spool leaves them).
    bool woke = false;
    while (!retrying_.empty() && retrying_.begin()->first <= now && !closed_) {
      waiting_.push(retrying_.begin()->second);
      retrying_.erase(retrying_.begin());
      woke = true;
    }
    if (woke) changed_.notify_all();
    std::vector<SpoolRecord> records;
    (void)forget_kept(now, 0, records);
    if (!records.empty()) {
      write_spool(lock, records);
      lock.lock();
      continue;
    }
    // Until the earliest of the next retry and the oldest keep's end.
    std::optional<WallTime> next;
    if (!retrying_.empty() && !closed_) next = retrying_.begin()->first;
    if (!kept_.empty()) {
      const WallTime until = kept_.front().first + options_.keep;
      if (!next || until < *next) next = until;
    }
    if (next) {
      (void)timer_.wait_until(lock, *next);
    } else {
      timer_.wait(lock);
    }
  }
}

void JobQueue::run(Entry& entry, const std::optional<SpoolTicket>& started) {
  std::optional<ProgramResult> result;
  std::string error;
  try {
    result = start_and_wait(entry, started);
  } catch (const std::exception& e) {  // the program could not start
    error = e.what();
  } catch (...) {
    error = "unknown error";
  }
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<SpoolRecord> records;
  after_run(entry, result ? &*result : nullptr, error, records);
  write_spool(lock, records);
}

ProgramResult JobQueue::start_and_wait(Entry& entry, const std::optional<SpoolTicket>& started) {
  std::vector<std::string> env = entry.env;
  env.push_back("SOCKECHO_JOB_ID=" + entry.job.id);
  env.push_back("SOCKECHO_JOB_ATTEMPT=" + std::to_string(entry.job.attempts));
  if (options_.spool) {
    // Durable before the program starts: a run the server's death cuts short is counted. (A
    // failure is logged; the job runs all the same.)
    (void)wait_durable(started, SpoolStarted{entry.job.id, entry.job.attempts, {}});
  }
  Program program(options_.argv, env, path_);
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    entry.program = &program;
    // A cancel that came before the program was in reach: it is asked to end as it would have
    // been (the cancel's wait kills it after the grace); a second stop signal kills it at once.
    if (abandoned_) {
      program.cancel();
    } else if (entry.cancelling) {
      program.terminate();
    }
  }
  struct Forget {  // the program goes out of reach before it is destroyed, however run() ends
    JobQueue& queue;
    Entry& entry;
    Forget(const Forget&) = delete;
    Forget& operator=(const Forget&) = delete;
    Forget(Forget&&) = delete;
    Forget& operator=(Forget&&) = delete;
    ~Forget() {
      const std::lock_guard<std::mutex> lock(queue.mutex_);
      entry.program = nullptr;
    }
  } forget{*this, entry};

  ProgramLimits limits = options_.limits;
  if (options_.budget) {
    limits.charge_output = [this, &entry](std::size_t bytes) {
      if (!charge_output(bytes)) return false;
      entry.output_charged += bytes;  // only this thread touches it while the job runs
      return true;
    };
  }
  const std::string who =
      "job id=" + entry.job.id + " attempt=" + std::to_string(entry.job.attempts);
  // With a spool, the request is kept there (once) and read for each run.
  std::string spooled;
  if (options_.spool) spooled = options_.spool->request(entry.job.id).value_or(std::string());
  const std::string& input = options_.spool ? spooled : entry.input;
  ProgramResult result = detail::run_logged(program, input, limits, options_.log, who);
  if (!options_.output_is_result) log_output(who, result);
  return result;
}

bool JobQueue::charge_output(std::size_t bytes) {
  if (options_.budget->try_charge(bytes)) return true;
  // No room: the oldest ended jobs are forgotten to make some, as --keep-max would.
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<SpoolRecord> records;
  const bool room = forget_kept(wall_now(), bytes, records);
  write_spool(lock, records);
  return room && options_.budget->try_charge(bytes);
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
}

void JobQueue::log_run_end(const Entry& e, std::chrono::microseconds took,
                           std::string_view words) const {
  const bool ok = e.job.end == JobEnd::ok;
  std::string line = "job id=" + e.job.id + " attempt=" + std::to_string(e.job.attempts) +
                     " ms=" + milliseconds(took) + " ";
  line += words;
  options_.log.event(ok ? LogLevel::normal : LogLevel::quiet, line);
}

void JobQueue::after_run(Entry& e, ProgramResult* result, const std::string& error,
                         std::vector<SpoolRecord>& records) {
  const WallTime now = wall_now();
  --stats_.running;
  changed_.notify_all();  // a drain waiting for this run
  ended_.notify_all();    // a cancel waiting for it (a second stop signal's interruption too)
  e.job.run_end = now;
  e.job.exit_code.reset();
  e.job.signal.reset();
  e.job.reason.clear();
  e.job.output_bytes = 0;
  e.job.stderr_bytes = 0;
  std::string words;
  std::chrono::microseconds took(0);
  if (result != nullptr) {
    took = result->duration;
    runs_.observe(result->duration);
    if (result->end == ProgramResult::End::exited && result->code >= 0) {
      e.job.exit_code = result->code;
    }
    if (result->end == ProgramResult::End::signaled) e.job.signal = result->code;
    e.job.output_bytes = result->output.size();
    e.job.stderr_bytes = result->error_bytes;
    // A limit of the host that killed it: its status line says which.
    if (result->over != ProgramResult::Over::none) e.job.reason = std::string(result->reason());
    e.output = std::move(result->output);
    words = result->describe();
  } else {
    words = "error=" + log_quoted(error);
  }
  if (abandoned_) {
    // A second stop signal killed it: interrupted, not ended. With a spool it is still running
    // there, and runs again at the next start.
    e.job.reason = "interrupted";
    log_run_end(e, took, words + " reason=interrupted");
    return;
  }
  if (e.cancelling) {
    log_run_end(e, took, "cancelled");
    end_job(e, JobEnd::cancelled, now, records);
    return;
  }
  const bool again = result != nullptr && result->end == ProgramResult::End::exited &&
                     result->code == kRetryExit && e.job.attempts < options_.max_attempts;
  if (!again) {
    e.job.end = result != nullptr ? job_end(result->outcome()) : JobEnd::failed;
    log_run_end(e, took, words);
    end_job(e, *e.job.end, now, records);
    return;
  }
  // It asked to be run again: after the delay, doubled at each further run, up to the most.
  std::chrono::milliseconds delay = options_.retry_delay;
  for (unsigned n = 1; n < e.job.attempts && delay < kMaxRetryDelay; ++n) delay *= 2;
  delay = std::min(delay, kMaxRetryDelay);
  if (closed_ && !options_.spool) delay = std::chrono::milliseconds(0);  // a stop runs it now
  refund_output(e);
  log_run_end(e, took, words + " retry_in_ms=" + std::to_string(delay.count()));
  e.job.state = JobState::retrying;
  if (closed_ && !options_.spool) {
    e.job.next_run = now;
    waiting_.push(&e);
    hold(e.source);
    return;
  }
  e.job.next_run = now + delay;
  retrying_.emplace(*e.job.next_run, &e);
  hold(e.source);
  if (options_.spool) records.emplace_back(SpoolNextRun{e.job.id, *e.job.next_run});
  timer_.notify_all();
}

void JobQueue::end_job(Entry& e, JobEnd end, WallTime now, std::vector<SpoolRecord>& records) {
  e.job.state = JobState::ended;
  e.job.end = end;
  e.job.next_run.reset();
  ++stats_.ends[static_cast<std::size_t>(end)];
  if (end == JobEnd::ok) {
    // Only a job that did not end ok can be retried: this one's input is needed no more.
    refund_input(e);
    e.input = std::string();
    e.env = std::vector<std::string>();
  }
  if (options_.spool) {
    SpoolEnded ended{
        e.job.id,     spool_end(end),     e.job.exit_code.value_or(-1), e.job.signal.value_or(0),
        e.job.reason, e.job.output_bytes, e.job.stderr_bytes,           std::move(e.output),
        now};
    e.output = std::string();  // kept in the spool, once
    records.emplace_back(std::move(ended));
  }
  const bool first = kept_.empty();
  kept_.emplace_back(now, e.job.id);
  ++stats_.kept;
  (void)forget_kept(now, 0, records);
  ended_.notify_all();  // a cancel waiting for it
  if (first) timer_.notify_all();
}

bool JobQueue::forget_kept(WallTime now, std::size_t room, std::vector<SpoolRecord>& records) {
  while (!kept_.empty()) {
    const auto [time, id] = kept_.front();
    Entry* e = lookup(id);
    // Retried since (or forgotten already): its place here is stale.
    if (e == nullptr || e->job.state != JobState::ended || e->job.run_end != time) {
      kept_.pop_front();
      continue;
    }
    std::string_view why;
    if (now >= time + options_.keep) {
      why = "keep";
    } else if (stats_.kept > options_.keep_max) {
      why = "keep_max";
    } else if (room > 0 && options_.budget &&
               options_.budget->charged() + room > options_.budget->limit()) {
      why = "memory";
    } else {
      break;
    }
    kept_.pop_front();
    options_.log.event(LogLevel::normal, "job id=" + id + " forgotten reason=" + std::string(why));
    refund_input(*e);
    refund_output(*e);
    if (options_.spool) records.emplace_back(SpoolForgotten{id});
    --stats_.kept;
    jobs_.erase(id);
  }
  return room == 0 || !options_.budget ||
         options_.budget->charged() + room <= options_.budget->limit();
}

void JobQueue::refund_input(Entry& e) noexcept {
  if (options_.budget && e.charged) options_.budget->refund(e.job.input_bytes);
  e.charged = false;
}

void JobQueue::refund_output(Entry& e) noexcept {
  if (options_.budget) options_.budget->refund(e.output_charged);
  e.output_charged = 0;
  e.output = std::string();
}

void JobQueue::collect(Exposition& out) const {
  const JobStats j = stats();
  out.single("sockecho_jobs_running", "gauge", "Background jobs running now.", j.running);
  out.single("sockecho_jobs_queued", "gauge", "Background jobs waiting to run.", j.queued);
  out.single("sockecho_jobs_retrying", "gauge",
             "Background jobs waiting for their retry delay to pass: their program asked to be "
             "retried (exit 75).",
             j.retrying);
  out.single("sockecho_jobs_accepted_total", "counter", "Background jobs acknowledged.",
             j.accepted);
  out.family("sockecho_jobs_refused_total", "counter",
             "Background jobs refused: the queue or memory was full, or it was stopping (busy); "
             "its source had its most jobs waiting (queued_per_source); the job could not be "
             "made durable (spool).");
  out.sample("sockecho_jobs_refused_total", label("reason", "busy"), j.busy);
  out.sample("sockecho_jobs_refused_total", label("reason", "queued_per_source"),
             j.queued_per_source);
  out.sample("sockecho_jobs_refused_total", label("reason", "spool"), j.spool);
  double oldest = 0;
  if (j.oldest_queued) {
    oldest = std::max(0.0, std::chrono::duration<double>(wall_now() - *j.oldest_queued).count());
  }
  out.single("sockecho_jobs_oldest_queued_seconds", "gauge",
             "How long the job queued longest has waited since its acceptance (0: none).", oldest);
  acks_.collect(
      out, "sockecho_jobs_ack_seconds",
      "From a job's request to its acknowledgement (the spool's sync included), seconds.");
  runs_.collect(out, "sockecho_jobs_run_seconds",
                "Each run of a background job's program, from its start to its end, seconds.");
  if (options_.spool) {
    out.single("sockecho_spool_bytes", "gauge", "Bytes of the spool's files.",
               options_.spool->bytes());
    out.single("sockecho_spool_syncs_total", "counter",
               "Syncs of the spool's files (one covers every job waiting for it).",
               options_.spool->syncs());
  }
  out.family("sockecho_jobs_total", "counter", "Background jobs ended, by how they ended.");
  for (const JobEnd end : kJobEnds) {
    out.sample("sockecho_jobs_total", label("outcome", to_string(end)), j.count(end));
  }
}

Handler background_handler(JobQueue& queue, std::string prefix) {
  return [&queue, prefix = std::move(prefix)](const Request& request, Reply& reply) {
    const Submission answer = queue.submit(std::string(request.bytes()), exec_environment(request),
                                           job_source(request.peer()));
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
