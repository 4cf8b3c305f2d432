#include "sockecho/server.hpp"

#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "sockecho/line.hpp"

namespace sockecho {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kNewline = "\n";

// A worker keeps its request buffer between connections up to this size; a larger one (left by
// a large request) goes to the server's spares, or is freed when the server has no timeout
// (and so no idle moment to free spares in).
constexpr std::size_t kKeptBuffer = std::size_t{1} << 20;

// How long accept() pauses when the process is out of descriptors or memory, so the loop does
// not spin while in-flight connections finish and free them.
constexpr std::chrono::milliseconds kAcceptPause{100};

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

std::string describe(const ServerOptions& options, const Address& address) {
  std::string text = "start listen=" + address.to_string();
  text += options.mode == Mode::echo ? " mode=echo" : " mode=line";
  text += " workers=" + std::to_string(options.workers);
  text += " timeout_ms=" + std::to_string(options.timeout.count());
  text += " max_bytes=" + std::to_string(options.max_bytes);
  return text;
}

}  // namespace

void Reply::append(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({nullptr, owned_.size(), bytes.size()});
  owned_.append(bytes);
  size_ += bytes.size();
}

void Reply::append_ref(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({bytes.data(), 0, bytes.size()});
  size_ += bytes.size();
}

void Reply::clear() noexcept {
  pieces_.clear();
  owned_.clear();
  size_ = 0;
}

void Reply::pieces(std::vector<std::string_view>& out) const {
  out.clear();
  for (const Piece& piece : pieces_) {
    const char* data = piece.data != nullptr ? piece.data : owned_.data() + piece.offset;
    out.emplace_back(data, piece.size);
  }
}

Handler prefix_handler(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view request, Reply& reply) {
    reply.append_ref(prefix);
    reply.append_ref(request);
  };
}

// What one worker thread reuses from connection to connection.
struct Server::Worker {
  Buffer buffer;
  Reply reply;
  std::vector<std::string_view> pieces;
};

Server::Server(Listener listener, Handler handler, ServerOptions options)
    : listener_(std::move(listener)), handler_(std::move(handler)), options_(std::move(options)) {
  if (options_.workers == 0) throw std::invalid_argument("workers must be at least 1");
  if (!handler_) throw std::invalid_argument("handler is empty");
  // Each worker holds at most one buffer, so keep_or_free() never allocates.
  spare_.reserve(options_.workers);
}

void Server::run() {
  options_.log.event(LogLevel::normal, describe(options_, address()));
  std::vector<std::thread> threads;
  try {
    threads.reserve(options_.workers - 1);
    for (unsigned i = 1; i < options_.workers; ++i) threads.emplace_back([this] { work(); });
  } catch (...) {
    fail(std::current_exception());
  }
  work();
  for (std::thread& thread : threads) thread.join();

  const ServerStats s = stats();
  options_.log.event(LogLevel::normal,
                     "stop accepted=" + std::to_string(s.accepted) + " ok=" + std::to_string(s.ok) +
                         " timeout=" + std::to_string(s.timeout) +
                         " too_large=" + std::to_string(s.too_large) +
                         " reset=" + std::to_string(s.reset) + " error=" + std::to_string(s.error));
  const std::lock_guard<std::mutex> lock(mutex_);
  if (fatal_) std::rethrow_exception(fatal_);
}

void Server::stop() noexcept {
  if (stopping_.exchange(true)) return;
  listener_.interrupt();
  {
    // Taking the lock orders this with a worker about to wait in pause_after_accept_failure().
    const std::lock_guard<std::mutex> lock(mutex_);
  }
  stopped_.notify_all();
  options_.log.event(LogLevel::normal,
                     "stopping: no new connections; in flight=" + std::to_string(active_.load()));
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
  s.ok = outcomes_[static_cast<int>(Outcome::ok)].load();
  s.timeout = outcomes_[static_cast<int>(Outcome::timeout)].load();
  s.too_large = outcomes_[static_cast<int>(Outcome::too_large)].load();
  s.reset = outcomes_[static_cast<int>(Outcome::reset)].load();
  s.error = outcomes_[static_cast<int>(Outcome::error)].load();
  return s;
}

bool Server::pause_after_accept_failure(const std::system_error& error) {
  const int err = error.code().value();
  const bool exhausted = error.code().category() == std::generic_category() &&
                         (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM);
  if (!exhausted) return false;
  options_.log.event(LogLevel::quiet, std::string(error.what()) + "; pausing accept");
  std::unique_lock<std::mutex> lock(mutex_);
  stopped_.wait_for(lock, kAcceptPause, [this] { return stopping_.load(); });
  return true;
}

void Server::work() noexcept {
  try {
    Worker worker;
    while (!stopping_.load(std::memory_order_relaxed)) {
      std::optional<Connection> connection;
      try {
        connection = listener_.accept_or_idle();
      } catch (const std::system_error& e) {
        if (pause_after_accept_failure(e)) continue;
        throw;
      }
      if (!connection) break;
      if (!connection->is_open()) {  // a whole timeout without a connection
        free_spares();
        continue;
      }
      serve(*connection, worker);
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void Server::serve(Connection& connection, Worker& worker) {
  const Clock::time_point start = Clock::now();
  accepted_.fetch_add(1, std::memory_order_relaxed);
  active_.fetch_add(1, std::memory_order_relaxed);
  if (options_.log.enabled(LogLevel::verbose)) {
    options_.log.event(LogLevel::verbose, "open peer=" + connection.peer().to_string());
  }

  ConnectionRecord record;
  try {
    // A listener bound with ListenOptions::connection_timeout equal to options_.timeout hands
    // out connections that already have it, saving two system calls per connection.
    if (connection.timeout() != options_.timeout) connection.set_timeout(options_.timeout);
    const bool answered = options_.mode == Mode::echo ? serve_echo(connection, worker)
                                                      : serve_line(connection, worker);
    if (!answered) {
      record.outcome = Outcome::too_large;
      record.detail = "request over " + std::to_string(options_.max_bytes) + " bytes";
    }
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
  // The reply is in the kernel by now. Handing the buffer back before the close (which is what
  // tells the client it is done) lets that client's next request find it.
  keep_or_free(worker.buffer);
  connection.close();

  record.peer = connection.peer();
  record.bytes_in = connection.bytes_read();
  record.bytes_out = connection.bytes_written();
  record.duration = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  outcomes_[static_cast<int>(record.outcome)].fetch_add(1, std::memory_order_relaxed);
  active_.fetch_sub(1, std::memory_order_relaxed);
  options_.log.connection(record);
  if (options_.on_connection) options_.on_connection(record);
}

void Server::take_spare(Buffer& buffer) {
  // Most servers never see a large request: skip the lock when there is nothing to take.
  if (buffer.capacity() > kKeptBuffer || spare_count_.load(std::memory_order_relaxed) == 0) return;
  const std::lock_guard<std::mutex> lock(spare_mutex_);
  if (spare_.empty()) return;
  buffer = std::move(spare_.back());
  spare_.pop_back();
  spare_count_.store(spare_.size(), std::memory_order_relaxed);
}

void Server::keep_or_free(Buffer& buffer) {
  if (buffer.capacity() <= kKeptBuffer) return;
  if (listener_.connection_timeout().count() == 0) {
    buffer.trim(kKeptBuffer);
    return;
  }
  buffer.clear();
  const std::lock_guard<std::mutex> lock(spare_mutex_);
  spare_.push_back(std::move(buffer));
  spare_count_.store(spare_.size(), std::memory_order_relaxed);
}

void Server::free_spares() noexcept {
  std::size_t count = 0;
  std::size_t bytes = 0;
  {
    const std::lock_guard<std::mutex> lock(spare_mutex_);
    count = spare_.size();
    for (const Buffer& buffer : spare_) bytes += buffer.capacity();
    spare_.clear();  // keeps the vector's own room, so keep_or_free() still never allocates
    spare_count_.store(0, std::memory_order_relaxed);
  }
  if (count > 0 && options_.log.enabled(LogLevel::verbose)) {
    try {
      options_.log.event(LogLevel::verbose, "idle: freed " + std::to_string(count) +
                                                " spare buffers, " + std::to_string(bytes) +
                                                " bytes");
    } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop it
    }
  }
}

bool Server::serve_echo(Connection& connection, Worker& worker) {
  take_spare(worker.buffer);
  worker.buffer.clear();
  if (!connection.read_to_end(worker.buffer, options_.max_bytes)) return false;
  worker.reply.clear();
  handler_(worker.buffer.view(), worker.reply);
  send(connection, worker);
  return true;
}

bool Server::serve_line(Connection& connection, Worker& worker) {
  const std::array<std::string_view, 2> greeting_line = {options_.greeting, kNewline};
  connection.write_all(greeting_line.data(), greeting_line.size());

  Buffer& buffer = worker.buffer;
  buffer.clear();
  LineFramer framer(options_.max_bytes);
  // Room for a line of max_bytes and its '\n'; anything longer is known to be too large.
  const std::size_t limit = options_.max_bytes == 0 ? 0 : options_.max_bytes + 1;
  for (;;) {
    // Answer every complete line now in the buffer with a single write.
    worker.reply.clear();
    while (const std::optional<std::string_view> line = framer.next(buffer.view())) {
      handler_(*line, worker.reply);
      worker.reply.append_ref(kNewline);
    }
    if (!worker.reply.empty()) send(connection, worker);
    buffer.consume(framer.consumed());
    framer.discard();
    if (framer.too_long(buffer.size())) return false;

    if (connection.read_into(buffer, limit) == 0) {
      if (!buffer.empty()) {  // a last line without '\n' is answered too
        worker.reply.clear();
        handler_(buffer.view(), worker.reply);
        worker.reply.append_ref(kNewline);
        send(connection, worker);
      }
      return true;
    }
  }
}

void Server::send(Connection& connection, Worker& worker) {
  worker.reply.pieces(worker.pieces);
  connection.write_all(worker.pieces.data(), worker.pieces.size());
}

}  // namespace sockecho
