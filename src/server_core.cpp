#include "sockecho/server_core.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <utility>

#include "sockecho/error.hpp"
#include "threads.hpp"

namespace sockecho {

namespace {

// How long a worker pauses when the process is out of descriptors or memory, so the loop does
// not spin while work in flight finishes and frees them.
constexpr std::chrono::milliseconds kFailurePause{100};
// The least time between two failure lines of one kind; those between are counted in the next.
constexpr std::chrono::seconds kFailureLineInterval{1};

// A failure that passes once work in flight frees what it holds.
bool exhausted(const std::system_error& error) noexcept {
  const int err = error.code().value();
  return error.code().category() == std::generic_category() &&
         (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM);
}

}  // namespace

std::string format_stats(const ServerStats& stats) {
  std::string line;
  if (stats.transport == Transport::datagram) {
    line = "datagrams=" + std::to_string(stats.accepted);
  } else {
    line = "accepted=" + std::to_string(stats.accepted) + " active=" + std::to_string(stats.active);
  }
  line += " " + format_outcomes(stats);
  line += " bytes_in=" + std::to_string(stats.bytes_in);
  line += " bytes_out=" + std::to_string(stats.bytes_out);
  return line;
}

std::string format_outcomes(const ServerStats& stats) {
  std::string words;
  for (const Outcome outcome : kOutcomes) {
    if (!words.empty()) words += ' ';
    words += std::string(to_string(outcome)) + "=" + std::to_string(stats.count(outcome));
  }
  return words;
}

FailureLines::Pass FailureLines::pass() noexcept {
  const auto now = std::chrono::steady_clock::now();
  const std::lock_guard<std::mutex> lock(mutex_);
  ++unwritten_;
  const bool first = written_ == std::chrono::steady_clock::time_point{};
  const auto since = now - written_;
  if (!first && since < kFailureLineInterval) return {};
  Pass pass{true, unwritten_,
            first ? std::chrono::milliseconds(0)
                  : std::chrono::duration_cast<std::chrono::milliseconds>(since)};
  unwritten_ = 0;
  written_ = now;
  return pass;
}

ServerCore::ServerCore(Transport transport, unsigned workers, Logger log)
    : transport_(transport),
      max_workers_(workers),
      log_(std::move(log)),
      stop_event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (workers == 0) throw std::invalid_argument("workers must be at least 1");
  if (!stop_event_) throw os_error(errno, "eventfd (the server's stop)");
}

ServerCore::~ServerCore() { end_delayed_stop(); }

void ServerCore::end_delayed_stop() noexcept {
  if (!delayed_stop_.joinable()) return;
  {
    // Ends its wait; the stop() it then makes finds the server stopped already, so it calls
    // nothing of a derived class that may be gone.
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  stopped_.notify_all();
  delayed_stop_.join();
}

void ServerCore::run() {
  log_.event(LogLevel::normal, "start " + describe());
  {
    const std::lock_guard<std::mutex> lock(threads_mutex_);
    running_ = 1;  // this thread, which serves until the stop and never retires
  }
  work(/*permanent=*/true);
  // No thread starts once stopping: the list is final. Each ends when its work is done.
  std::vector<std::thread> threads;
  {
    const std::lock_guard<std::mutex> lock(threads_mutex_);
    threads.swap(threads_);
    retired_.clear();
  }
  for (std::thread& thread : threads) thread.join();
  after_workers();
  {
    std::thread delayed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      delayed.swap(delayed_stop_);
    }
    if (delayed.joinable()) delayed.join();  // its stop() is what ended work(): it is done
  }
  {
    // After the stopping line, which stop() writes under this lock.
    const std::lock_guard<std::mutex> lock(mutex_);
  }
  log_.event(LogLevel::normal, "stop " + stop_words(stats()));
  const std::lock_guard<std::mutex> lock(mutex_);
  if (fatal_) std::rethrow_exception(fatal_);
}

void ServerCore::stop() noexcept {
  {
    // Logged before the workers wake, and under the lock run() takes before its stop line: a
    // worker that sees the stop on its own (between two waits) cannot get the stop line out
    // first.
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_.exchange(true)) return;
    try {
      log_.event(LogLevel::normal, stopping_line());
    } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the stop goes on
    }
  }
  interrupt();
  // Readable from now on, for every session waiting between requests. A write of 1 to an
  // eventfd cannot fail here: the counter would need 2^64 of them to fill.
  const std::uint64_t one = 1;
  (void)retry_eintr([&] { return ::write(stop_event_.get(), &one, sizeof one); });
  {
    // Taking the lock orders this with a worker about to wait in pause_after_failure().
    const std::lock_guard<std::mutex> lock(mutex_);
  }
  stopped_.notify_all();
}

void ServerCore::stop_after(std::chrono::milliseconds delay) noexcept {
  if (delay.count() <= 0) {
    stop();
    return;
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_.load() || announced_.exchange(true)) return;
    log_.event(LogLevel::normal, "stopping in " + std::to_string(delay.count()) +
                                     " ms: announced now, connections still served until then");
    try {
      delayed_stop_ = std::thread([this, delay] {
        {
          std::unique_lock<std::mutex> wait(mutex_);
          stopped_.wait_for(wait, delay, [this] { return stopping_.load(); });
        }
        stop();
      });
      return;
    } catch (const std::system_error&) {  // NOLINT(bugprone-empty-catch): stopped just below
    }
  }
  stop();  // no thread for the wait: stop now rather than never
}

void ServerCore::fail(std::exception_ptr error) noexcept {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!fatal_) fatal_ = std::move(error);
  }
  stop();
}

ServerStats ServerCore::stats() const noexcept {
  ServerStats s;
  s.transport = transport_;
  s.accepted = accepted_.load();
  s.active = active_.load();
  s.workers = running_.load();
  for (std::size_t i = 0; i < kOutcomeCount; ++i) s.outcomes[i] = outcomes_[i].load();
  s.bytes_in = bytes_in_.load();
  s.bytes_out = bytes_out_.load();
  return s;
}

void ServerCore::arrived() noexcept {
  accepted_.fetch_add(1, std::memory_order_relaxed);
  active_.fetch_add(1, std::memory_order_relaxed);
}

void ServerCore::counted(Outcome outcome, std::uint64_t bytes_in,
                         std::uint64_t bytes_out) noexcept {
  outcomes_[static_cast<std::size_t>(outcome)].fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(bytes_in, std::memory_order_relaxed);
  bytes_out_.fetch_add(bytes_out, std::memory_order_relaxed);
  active_.fetch_sub(1, std::memory_order_relaxed);
}

void ServerCore::collect_up(Exposition& out) const {
  out.single("sockecho_up", "gauge", "1 while the server serves, 0 once it is stopping.",
             std::uint64_t{stopping() ? 0U : 1U});
}

bool ServerCore::pause_after_failure(const std::system_error& error) {
  if (!exhausted(error)) return false;
  const FailureLines::Pass pass = pauses_.pass();
  if (pass.write) {
    std::string line = std::string(error.what()) + "; pausing accept";
    if (pass.count > 1) {
      const auto tenths = pass.since.count() / 100;
      line += " (" + std::to_string(pass.count) + " times in the last " +
              std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s)";
    }
    log_.event(LogLevel::quiet, line);
  }
  std::unique_lock<std::mutex> lock(mutex_);
  stopped_.wait_for(lock, kFailurePause, [this] { return stopping_.load(); });
  return true;
}

void ServerCore::work(bool permanent) noexcept {
  try {
    const std::unique_ptr<Worker> worker = make_worker();
    while (!stopping_.load(std::memory_order_relaxed)) {
      Worker::Wait waited{};
      waiting_.fetch_add(1, std::memory_order_relaxed);
      try {
        waited = worker->wait();
      } catch (const std::system_error& e) {
        waiting_.fetch_sub(1, std::memory_order_relaxed);
        if (pause_after_failure(e)) continue;
        throw;
      }
      const unsigned others_waiting = waiting_.fetch_sub(1, std::memory_order_relaxed) - 1;
      if (waited == Worker::Wait::stopped) break;
      if (waited == Worker::Wait::idle) {
        worker->idle();
        if (!permanent && retire()) return;
        continue;
      }
      // The last thread waiting took this one: start another, while below the limit, so the
      // next one does not wait for this one to end.
      if (others_waiting == 0) add_worker();
      worker->serve();
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void ServerCore::add_worker() noexcept {
  const std::lock_guard<std::mutex> lock(threads_mutex_);
  if (stopping_.load() || running_.load() >= max_workers_) return;
  // Out of threads or memory: the running workers go on, the next ones wait longer.
  if (detail::start_thread(threads_, retired_, /*block_signals=*/false, log_,
                           [this] { work(/*permanent=*/false); })) {
    running_.fetch_add(1);
  }
}

bool ServerCore::retire() noexcept {
  const std::lock_guard<std::mutex> lock(threads_mutex_);
  if (stopping_.load()) return false;  // leaving anyway, through the loop's own test
  try {
    retired_.push_back(std::this_thread::get_id());
  } catch (...) {  // no room to record it: stay, and try again after the next idle period
    return false;
  }
  running_.fetch_sub(1);
  return true;
}

ServingThread::ServingThread(ServerCore& server) : server_(server) {
  thread_ = std::thread([this] {
    try {
      server_.run();
    } catch (...) {
      failure_ = std::current_exception();
    }
  });
}

ServingThread::~ServingThread() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

void ServingThread::join() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
}

}  // namespace sockecho
