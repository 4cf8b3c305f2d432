#include "sockecho/server.hpp"

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace sockecho {

namespace {

// How long accept() pauses when the process is out of descriptors or memory, so the loop does
// not spin while in-flight connections finish and free them.
constexpr std::chrono::milliseconds kAcceptPause{100};
// The least time between two "pausing accept" lines; the pauses between are counted in the next.
constexpr std::chrono::seconds kPauseLogInterval{1};

Outcome classify(const std::error_code& code) noexcept {
  if (code.category() != std::generic_category()) return Outcome::error;
  switch (code.value()) {
    case ETIMEDOUT:
      return Outcome::timeout;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      return Outcome::reset;
    case EMSGSIZE:
      return Outcome::too_large;
    default:
      return Outcome::error;
  }
}

// " ok=1 timeout=0 ...": every outcome's count.
void append_outcomes(std::string& line, const ServerStats& stats) {
  for (const Outcome outcome : kOutcomes) {
    line += " " + std::string(to_string(outcome)) + "=" + std::to_string(stats.count(outcome));
  }
}

}  // namespace

std::string format_stats(const ServerStats& stats) {
  std::string line =
      "accepted=" + std::to_string(stats.accepted) + " active=" + std::to_string(stats.active);
  append_outcomes(line, stats);
  line += " bytes_in=" + std::to_string(stats.bytes_in);
  line += " bytes_out=" + std::to_string(stats.bytes_out);
  return line;
}

Server::Server(Listener listener, std::shared_ptr<Protocol> protocol, ServerOptions options)
    : listener_(std::move(listener)), protocol_(std::move(protocol)), options_(std::move(options)) {
  if (options_.workers == 0) throw std::invalid_argument("workers must be at least 1");
  if (!protocol_) throw std::invalid_argument("protocol is empty");
  options_.timeout = std::max(options_.timeout, std::chrono::milliseconds(0));
  // How long a worker waits for a connection before the protocol may free what it keeps and an
  // extra worker retires: the idle limit, or kIdleWithoutTimeout when there is none.
  listener_.set_idle_timeout(options_.timeout.count() > 0 ? options_.timeout : kIdleWithoutTimeout);
  protocol_->idle_every(options_.timeout);
}

void Server::run() {
  options_.log.event(LogLevel::normal,
                     "start listen=" + address().to_string() + " " + protocol_->describe() +
                         " workers=" + std::to_string(options_.workers) +
                         " timeout_ms=" + std::to_string(options_.timeout.count()) +
                         " max_per_source=" + std::to_string(options_.max_per_source));
  {
    const std::lock_guard<std::mutex> lock(threads_mutex_);
    running_ = 1;  // this thread, which serves until the stop and never retires
  }
  work(/*permanent=*/true);
  // No thread starts once stopping: the list is final. Each ends when its connection is done.
  std::vector<std::thread> threads;
  {
    const std::lock_guard<std::mutex> lock(threads_mutex_);
    threads.swap(threads_);
    retired_.clear();
  }
  for (std::thread& thread : threads) thread.join();
  {
    std::thread delayed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      delayed.swap(delayed_stop_);
    }
    if (delayed.joinable()) delayed.join();  // its stop() is what ended work(): it is done
  }

  const ServerStats s = stats();
  std::string line = "stop accepted=" + std::to_string(s.accepted);
  append_outcomes(line, s);
  options_.log.event(LogLevel::normal, line);
  const std::lock_guard<std::mutex> lock(mutex_);
  if (fatal_) std::rethrow_exception(fatal_);
}

void Server::stop() noexcept {
  if (stopping_.exchange(true)) return;
  // Logged before the workers wake, so it always comes before the stop line they lead to.
  options_.log.event(LogLevel::normal,
                     "stopping: no new connections; in flight=" + std::to_string(active_.load()));
  listener_.interrupt();
  {
    // Taking the lock orders this with a worker about to wait in pause_after_accept_failure().
    const std::lock_guard<std::mutex> lock(mutex_);
  }
  stopped_.notify_all();
}

void Server::stop_after(std::chrono::milliseconds delay) noexcept {
  if (delay.count() <= 0) {
    stop();
    return;
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_.load() || announced_.exchange(true)) return;
  options_.log.event(LogLevel::normal,
                     "stopping in " + std::to_string(delay.count()) +
                         " ms: announced now, connections still served until then");
  try {
    delayed_stop_ = std::thread([this, delay] {
      {
        std::unique_lock<std::mutex> wait(mutex_);
        stopped_.wait_for(wait, delay, [this] { return stopping_.load(); });
      }
      stop();
    });
  } catch (const std::system_error&) {
    stop();  // no thread for the wait: stop now rather than never
  }
}

Server::~Server() {
  if (delayed_stop_.joinable()) {
    stop();
    delayed_stop_.join();
  }
}

void Server::fail(std::exception_ptr error) noexcept {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!fatal_) fatal_ = std::move(error);
  }
  stop();
}

ServerStats Server::stats() const noexcept {
  ServerStats s;
  s.accepted = accepted_.load();
  s.active = active_.load();
  for (std::size_t i = 0; i < kOutcomeCount; ++i) s.outcomes[i] = outcomes_[i].load();
  {
    const std::lock_guard<std::mutex> lock(threads_mutex_);
    s.workers = running_;
  }
  s.bytes_in = bytes_in_.load();
  s.bytes_out = bytes_out_.load();
  return s;
}

bool Server::pause_after_accept_failure(const std::system_error& error) {
  const int err = error.code().value();
  const bool exhausted = error.code().category() == std::generic_category() &&
                         (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM);
  if (!exhausted) return false;
  std::unique_lock<std::mutex> lock(mutex_);
  ++unlogged_pauses_;
  const auto now = std::chrono::steady_clock::now();
  const auto since = now - pause_logged_;
  if (pause_logged_ == std::chrono::steady_clock::time_point{} || since >= kPauseLogInterval) {
    std::string line = std::string(error.what()) + "; pausing accept";
    if (unlogged_pauses_ > 1) {
      const auto tenths =
          std::chrono::duration_cast<std::chrono::milliseconds>(since).count() / 100;
      line += " (" + std::to_string(unlogged_pauses_) + " times in the last " +
              std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s)";
    }
    unlogged_pauses_ = 0;
    pause_logged_ = now;
    // Not under the lock: a stalled log reader must not hold up stop().
    lock.unlock();
    options_.log.event(LogLevel::quiet, line);
    lock.lock();
  }
  stopped_.wait_for(lock, kAcceptPause, [this] { return stopping_.load(); });
  return true;
}

void Server::work(bool permanent) noexcept {
  try {
    Workspace workspace;
    while (!stopping_.load(std::memory_order_relaxed)) {
      std::optional<Connection> connection;
      waiting_.fetch_add(1, std::memory_order_relaxed);
      try {
        connection = listener_.accept_or_idle();
      } catch (const std::system_error& e) {
        waiting_.fetch_sub(1, std::memory_order_relaxed);
        if (pause_after_accept_failure(e)) continue;
        throw;
      }
      const unsigned others_waiting = waiting_.fetch_sub(1, std::memory_order_relaxed) - 1;
      if (!connection) break;
      if (!connection->is_open()) {  // a whole idle period without a connection
        protocol_->idle(options_.log);
        if (!permanent && retire()) return;
        continue;
      }
      // The last thread waiting in accept() took this one: start another, while below the
      // limit, so the next connection does not wait for this one to end.
      if (others_waiting == 0) add_worker();
      serve(*connection, workspace);
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void Server::add_worker() noexcept {
  const std::lock_guard<std::mutex> lock(threads_mutex_);
  if (stopping_.load() || running_ >= options_.workers) return;
  reap_retired();
  try {
    threads_.emplace_back([this] { work(/*permanent=*/false); });
    ++running_;
  } catch (const std::exception& e) {
    // Out of threads or memory: the running workers go on, the next connections wait longer.
    options_.log.event(LogLevel::quiet, std::string("cannot start a worker: ") + e.what());
  }
}

bool Server::retire() noexcept {
  const std::lock_guard<std::mutex> lock(threads_mutex_);
  if (stopping_.load()) return false;  // leaving anyway, through the loop's own test
  try {
    retired_.push_back(std::this_thread::get_id());
  } catch (...) {  // no room to record it: stay, and try again after the next idle period
    return false;
  }
  --running_;
  return true;
}

void Server::reap_retired() noexcept {
  // A retired thread has left work() and is ending, so joining it waits a moment at most.
  for (const std::thread::id id : retired_) {
    const auto found = std::find_if(threads_.begin(), threads_.end(),
                                    [id](const std::thread& t) { return t.get_id() == id; });
    if (found == threads_.end()) continue;
    found->join();
    threads_.erase(found);
  }
  retired_.clear();
}

void Server::serve(Connection& connection, Workspace& workspace) {
  const Clock::time_point start = Clock::now();
  accepted_.fetch_add(1, std::memory_order_relaxed);
  active_.fetch_add(1, std::memory_order_relaxed);
  if (options_.log.enabled(LogLevel::verbose)) {
    options_.log.event(LogLevel::verbose, "open peer=" + connection.peer().to_string());
  }
  connection.deadline().set_idle(options_.timeout, start);

  ConnectionRecord record;
  bool answered = false;  // a whole reply sent, whatever the outcome
  const bool admitted = options_.max_per_source == 0 || admit(connection.peer());
  if (!admitted) {
    record.outcome = Outcome::refused;
    record.reason = "per_source";
  } else {
    try {
      protocol_->serve(connection, workspace);
    } catch (const ConnectionError& e) {
      record.outcome = e.outcome();
      record.fields = e.fields();
      record.detail = e.what();
      answered = e.answered();
    } catch (const std::system_error& e) {
      record.outcome = classify(e.code());
      record.detail = e.what();
    } catch (const std::exception& e) {
      record.outcome = Outcome::error;
      record.detail = e.what();
    } catch (...) {  // a handler may throw anything; it still ends only this connection
      record.outcome = Outcome::error;
      record.detail = "unknown exception";
    }
  }
  // A connection that ends without its whole reply ends with a reset, so no client mistakes it
  // for an empty or a complete answer.
  if (record.outcome == Outcome::ok || answered) {
    connection.close();
  } else {
    connection.abort();
  }
  if (admitted && options_.max_per_source > 0) release(connection.peer());

  record.peer = connection.peer();
  record.bytes_in = connection.bytes_read();
  record.bytes_out = connection.bytes_written();
  record.duration = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  finish(record);
}

bool Server::admit(const Address& peer) {
  const std::lock_guard<std::mutex> lock(sources_mutex_);
  unsigned& open = sources_[peer.source_key()];  // at least 1 when it is at the limit
  if (open >= options_.max_per_source) return false;
  ++open;
  return true;
}

void Server::release(const Address& peer) noexcept {
  try {
    const std::string key = peer.source_key();
    const std::lock_guard<std::mutex> lock(sources_mutex_);
    const auto found = sources_.find(key);
    if (found == sources_.end()) return;
    if (--found->second == 0) sources_.erase(found);
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the key; the count stays high
  }
}

void Server::finish(ConnectionRecord& record) noexcept {
  outcomes_[static_cast<std::size_t>(record.outcome)].fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(record.bytes_in, std::memory_order_relaxed);
  bytes_out_.fetch_add(record.bytes_out, std::memory_order_relaxed);
  active_.fetch_sub(1, std::memory_order_relaxed);
  options_.log.connection(record);
  if (!options_.on_connection) return;
  try {
    options_.on_connection(record);
  } catch (const std::exception& e) {
    options_.log.event(LogLevel::quiet, std::string("on_connection failed: ") + e.what());
  } catch (...) {
    options_.log.event(LogLevel::quiet, "on_connection failed: unknown exception");
  }
}

}  // namespace sockecho
