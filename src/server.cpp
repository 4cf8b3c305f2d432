#include "sockecho/server.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "classify.hpp"
#include "sockecho/error.hpp"
#include "threads.hpp"
#include "waiting_room.hpp"

namespace sockecho {

namespace {

// The record of a reply a protocol left: true when a whole reply went out, whatever the outcome.
bool replied(const Reply& reply, ConnectionRecord& record) {
  record.outcome = reply.outcome();
  if (!reply.fields().empty()) record.fields = reply.fields();  // ok too: "job=ID"
  if (record.outcome == Outcome::ok) return true;
  record.detail = reply.detail();
  return reply.answered();
}

// Runs `serve` (which returns whether a whole reply went out) and turns whatever it throws into
// the connection's outcome.
template <typename Serve>
bool guarded(ConnectionRecord& record, Serve&& serve) {
  try {
    return serve();
  } catch (const ConnectionError& e) {
    record.outcome = e.outcome();
    record.fields = e.fields();
    record.detail = e.what();
  } catch (const std::system_error& e) {
    record.outcome = detail::classify(e.code());
    record.detail = e.what();
  } catch (const std::exception& e) {
    record.outcome = Outcome::error;
    record.detail = e.what();
  } catch (...) {  // a handler may throw anything; it still ends only this connection
    record.outcome = Outcome::error;
    record.detail = "unknown exception";
  }
  return false;
}

// How the protocol ended the connection: the outcome of the reply it left in the workspace, or
// of what it threw. True when a whole reply went out, whatever the outcome.
bool serve_with(Protocol& protocol, Connection& connection, Workspace& workspace,
                ConnectionRecord& record) {
  workspace.reply.clear();
  return guarded(record, [&] {
    protocol.serve(connection, workspace);
    return replied(workspace.reply, record);
  });
}

enum class Eager { complete, ended, incomplete, too_large };

// Reads more of a connection's request into `buffer` (which may hold the start of it already)
// until it is complete (Unit::connection: the half-close; Unit::line: a '\n' or the half-close),
// until `grace_end`, or until the buffer holds kEagerBytes, whichever comes first. A line's
// request limit starts at its first byte. Throws std::system_error as the connection's reads do.
Eager read_eagerly(Connection& connection, Buffer& buffer, const Framing& framing,
                   Clock::time_point grace_end) {
  const std::size_t limit = framing.max_bytes == 0 ? 0 : framing.max_bytes + 1;
  const std::size_t most = limit == 0 ? kEagerBytes : std::min(limit, kEagerBytes);
  const bool lines = framing.unit == Framing::Unit::line;
  for (;;) {
    if (limit != 0 && buffer.size() >= limit) return Eager::too_large;
    if (buffer.room() == 0) {
      if (buffer.capacity() >= most) return Eager::incomplete;
      buffer.reserve(buffer.next_capacity(most));
    }
    std::size_t chunk = buffer.room();
    if (limit != 0) chunk = std::min(chunk, limit - buffer.size());
    if (const std::optional<std::size_t> n = connection.try_read(buffer.tail(), chunk)) {
      if (*n == 0) return Eager::ended;
      if (!lines) {
        buffer.commit(*n);
        continue;
      }
      if (buffer.empty()) {
        connection.deadline().set_end(end_after(framing.request_timeout, Clock::now()));
      }
      const bool line_ends = std::memchr(buffer.tail(), '\n', *n) != nullptr;
      buffer.commit(*n);
      if (line_ends) return Eager::complete;
      continue;
    }
    if (!connection.wait_readable_until(grace_end)) return Eager::incomplete;
  }
}

}  // namespace

// A worker of a stream server: a connection taken from the listener (blocking in accept(), one
// woken per connection), served with the protocol's state kept from one connection to the next.
// With a waiting room, what it cannot answer within the grace it parks there; the crew
// (Server::crew_work()) answers it once it is complete.
class Server::StreamWorker final : public Worker {
 public:
  explicit StreamWorker(Server& server) : server_(server) { workspace_.stop_fd = server.stop_fd(); }

  Wait wait() override {
    // At --max-connections, no worker accepts: new connections wait in the kernel's backlog.
    const Wait slot = server_.take_slot();
    if (slot != Wait::taken) return slot;
    connection_ = server_.listener_.accept_or_idle();
    if (!connection_ || !connection_->is_open()) {
      server_.give_slot();
      return connection_ ? Wait::idle : Wait::stopped;
    }
    server_.arrived();
    return Wait::taken;
  }
  void serve() override {
    server_.serve(*connection_, workspace_);
    connection_.reset();
  }
  void idle() noexcept override { server_.protocol_->idle(server_.options_.log); }

 private:
  Server& server_;
  std::optional<Connection> connection_;
  Workspace workspace_;
};

// The requests handled at once, a handler or a program run each, across the workers and the
// crew: at most `workers`. Acquired for the answer alone, never while a connection waits; only a
// server with a waiting room takes them (without one, each worker holds its connection whole).
class Server::Permit {
 public:
  explicit Permit(Server& server) : server_(server) {
    std::unique_lock<std::mutex> lock(server_.permits_mutex_);
    server_.permit_freed_.wait(lock, [this] { return server_.permits_ > 0; });
    --server_.permits_;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  Permit(Permit&&) = delete;
  Permit& operator=(Permit&&) = delete;
  ~Permit() {
    {
      const std::lock_guard<std::mutex> lock(server_.permits_mutex_);
      ++server_.permits_;
    }
    server_.permit_freed_.notify_one();
  }

 private:
  Server& server_;
};

Server::Server(Listener listener, std::shared_ptr<Protocol> protocol, ServerOptions options)
    : ServerCore(Transport::stream, worker_limit(protocol.get(), options), options.log),
      listener_(std::move(listener)),
      protocol_(std::move(protocol)),
      options_(std::move(options)) {
  if (!protocol_) throw std::invalid_argument("protocol is empty");
  options_.timeout = std::max(options_.timeout, std::chrono::milliseconds(0));
  // How long a worker waits for a connection before the protocol may free what it keeps and an
  // extra worker retires: the idle limit, or kIdleWithoutTimeout when there is none.
  listener_.set_idle_timeout(options_.timeout.count() > 0 ? options_.timeout : kIdleWithoutTimeout);
  protocol_->idle_every(options_.timeout);
  // --workers 1 stays the document's serial loop: one connection at a time, from accept to close.
  framing_ = protocol_->framing();
  if (framing_ && options_.workers > 1) {
    // Large buffers are kept as long as a worker's spares are (SpareBuffers): a timeout's
    // worth of idleness; with none, not at all.
    room_ = std::make_unique<detail::WaitingRoom>(
        *framing_, options_.timeout,
        [this](detail::Waiting& waiting, Outcome outcome, const std::string& detail) {
          end_waiting(waiting, outcome, detail);
        },
        [this] { crew_needed(); });
    permits_ = options_.workers;
  }
}

Server::~Server() {
  end_delayed_stop();
  // Its connections are ended while this Server, whose end() they go through, is whole.
  room_.reset();
}

std::uint64_t Server::waiting() const noexcept { return room_ ? room_->count() : 0; }

unsigned Server::connections_max() const noexcept {
  return room_ ? options_.max_connections : max_workers();
}

void Server::after_workers() noexcept {
  if (!room_) return;
  // The crew answers what completes in the room until it holds nothing (each request begun
  // completes or runs out of its limits: a stop bounded as before); then it ends.
  room_->drain();
  {
    // At least one thread to wait for what is still being read.
    const std::lock_guard<std::mutex> lock(crew_mutex_);
    if (crew_running_ == 0 && room_->count() > 0) start_crew_thread();
  }
  // Joined until none is left: a thread may start another while the room drains.
  for (;;) {
    std::vector<std::thread> crew;
    {
      const std::lock_guard<std::mutex> lock(crew_mutex_);
      crew.swap(crew_);
      crew_retired_.clear();
    }
    if (crew.empty()) break;
    for (std::thread& thread : crew) thread.join();
  }
  room_->stop();
}

void Server::crew_needed() noexcept {
  const std::lock_guard<std::mutex> lock(crew_mutex_);
  grow_crew();
}

void Server::grow_crew() noexcept {
  // One more while requests wait with no thread free for them, up to the workers.
  if (crew_idle_ >= room_->queued() || crew_running_ >= options_.workers) return;
  start_crew_thread();
}

void Server::start_crew_thread() noexcept {
  // Out of threads or memory: the running ones go on; a stop still drains the room. The crew
  // takes no signal of the program's.
  if (detail::start_thread(crew_, crew_retired_, /*block_signals=*/true, options_.log,
                           [this] { crew_work(); })) {
    ++crew_running_;
    ++crew_idle_;  // counted waiting until it takes its first request
  }
}

void Server::crew_work() noexcept {
  Workspace workspace;
  workspace.stop_fd = stop_fd();
  const std::chrono::milliseconds idle = listener_.idle_timeout();
  for (;;) {
    std::unique_ptr<detail::Waiting> taken = room_->take(idle);
    std::unique_lock<std::mutex> lock(crew_mutex_);
    if (!taken) {
      // The room is empty at the stop, or nothing came for a whole idle period (unless a
      // request came just now): this thread ends.
      if (!room_->draining() && room_->queued() > 0) continue;
      --crew_idle_;
      --crew_running_;
      if (!room_->draining()) {
        try {
          crew_retired_.push_back(std::this_thread::get_id());
        } catch (...) {  // NOLINT(bugprone-empty-catch): joined at the end of run() instead
        }
      }
      return;
    }
    --crew_idle_;
    grow_crew();  // more waiting than threads free: another, so none waits for this one
    lock.unlock();
    try {
      serve_waiting(*taken, workspace);  // the answer runs without the lock
    } catch (const std::exception& e) {  // out of memory: this connection ends, the crew goes on
      options_.log.event(LogLevel::quiet, std::string("a worker failed: ") + e.what());
    }
    room_->recycle(*taken);
    taken.reset();
    lock.lock();
    ++crew_idle_;
  }
}

void Server::interrupt() noexcept {
  listener_.interrupt();
  if (!room_) return;
  room_->close_idle();
  { const std::lock_guard<std::mutex> lock(slots_mutex_); }
  slot_freed_.notify_all();
}

std::unique_ptr<ServerCore::Worker> Server::make_worker() {
  return std::make_unique<StreamWorker>(*this);
}

std::string Server::describe() const {
  return "listen=" + address().to_string() + " " + protocol_->describe() +
         " workers=" + std::to_string(options_.workers) +
         " timeout_ms=" + std::to_string(options_.timeout.count()) +
         " max_per_source=" + std::to_string(options_.max_per_source) +
         " max_connections=" + std::to_string(connections_max());
}

std::string Server::stop_words(const ServerStats& stats) const {
  return "accepted=" + std::to_string(stats.accepted) + " " + format_outcomes(stats);
}

std::string Server::stopping_line() const {
  return "stopping: no new connections; in flight=" + std::to_string(stats().active);
}

void Server::collect(Exposition& out) const {
  const ServerStats s = stats();
  out.single("sockecho_connections_accepted_total", "counter", "Connections accepted.", s.accepted);
  out.family("sockecho_connections_total", "counter", "Connections finished, by outcome.");
  for (const Outcome outcome : kOutcomes) {
    out.sample("sockecho_connections_total", label("outcome", to_string(outcome)),
               s.count(outcome));
  }
  out.single("sockecho_connections_active", "gauge", "Connections open now.", s.active);
  out.single("sockecho_connections_waiting", "gauge",
             "Connections open and held by no worker now (the waiting room).", waiting());
  out.single("sockecho_connections_max", "gauge",
             "Most connections open at once (--max-connections; 0: no limit).",
             std::uint64_t{connections_max()});
  out.single("sockecho_bytes_received_total", "counter", "Bytes read from finished connections.",
             s.bytes_in);
  out.single("sockecho_bytes_sent_total", "counter", "Bytes written to finished connections.",
             s.bytes_out);
  out.single("sockecho_workers", "gauge", "Worker threads running now, busy or waiting.",
             s.workers);
  out.single("sockecho_workers_max", "gauge", "Most worker threads (--workers).",
             std::uint64_t{options_.workers});
  collect_up(out);
}

void Server::serve(Connection& connection, Workspace& workspace) {
  const Clock::time_point start = Clock::now();
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
  } else if (room_) {
    bool parked = false;
    answered = serve_eagerly(connection, workspace, start, record, parked);
    if (parked) return;  // the room's now, until its request is complete
  } else {
    answered = serve_with(*protocol_, connection, workspace, record);
  }
  end(connection, record, answered, admitted, start);
}

bool Server::serve_eagerly(Connection& connection, Workspace& workspace, Clock::time_point start,
                           ConnectionRecord& record, bool& parked) {
  workspace.reply.clear();
  workspace.unsent.clear();
  workspace.buffer.clear();
  return guarded(record, [&] {
    // Echo: the whole connection is the request. Line: no line is begun yet.
    connection.deadline().set_end(framing_->unit == Framing::Unit::connection
                                      ? end_after(framing_->request_timeout, start)
                                      : Clock::time_point::max());
    protocol_->open(connection, workspace);
    return go_on(connection, workspace, start, record, parked);
  });
}

bool Server::go_on(Connection& connection, Workspace& workspace, Clock::time_point start,
                   ConnectionRecord& record, bool& parked) {
  Buffer& buffer = workspace.buffer;
  for (;;) {
    const Eager got = read_eagerly(connection, buffer, *framing_, Clock::now() + kGrace);
    if (got == Eager::too_large) {
      throw ConnectionError(Outcome::too_large, detail::over_max_bytes(framing_->max_bytes));
    }
    if (got == Eager::incomplete) {
      if (!room_->park(connection, buffer.view(), start, true)) {
        throw ConnectionError(Outcome::too_large,
                              detail::over_max_total_bytes(framing_->budget->limit()));
      }
      parked = true;
      return false;
    }
    workspace.defer = true;
    Answered answered;
    {
      const Permit permit(*this);
      answered = protocol_->answer(connection, workspace, buffer.view(), got == Eager::ended);
    }
    if (answered.done) return reply_done(connection, workspace, start, true, record, parked);
    // Line mode: what is left is the start of the next line, begun in the last read.
    buffer.consume(answered.used);
    connection.deadline().set_end(buffer.empty()
                                      ? Clock::time_point::max()
                                      : end_after(framing_->request_timeout, Clock::now()));
    if (rest_parked(connection, workspace, start, true, record, buffer.view())) {
      parked = true;
      return false;
    }
  }
}

bool Server::rest_parked(Connection& connection, Workspace& workspace, Clock::time_point start,
                         bool admitted, const ConnectionRecord& record,
                         std::optional<std::string_view> next) {
  if (workspace.unsent.empty()) return false;
  // The client has not read all of its reply yet (a line client may be sending lines without
  // reading any): the rest waits in the room while it fits the budget, with the session when it
  // goes on; past it, this worker writes it as before. The rest leaves the workspace first, so
  // that a write cut short (a client that never reads) leaves nothing of it for the next client.
  Buffer unsent = std::exchange(workspace.unsent, Buffer());
  if (room_->park_reply(connection, unsent, record, start, admitted, next)) return true;
  connection.write_all(unsent.view());
  return false;
}

bool Server::reply_done(Connection& connection, Workspace& workspace, Clock::time_point start,
                        bool admitted, ConnectionRecord& record, bool& parked) {
  const bool answered = replied(workspace.reply, record);
  if (!rest_parked(connection, workspace, start, admitted, record, std::nullopt)) return answered;
  parked = true;
  return false;
}

void Server::serve_waiting(detail::Waiting& waiting, Workspace& workspace) {
  ConnectionRecord record;
  bool parked = false;
  workspace.reply.clear();
  workspace.unsent.clear();
  Connection& connection = waiting.connection;
  const bool answered = guarded(record, [&] {
    const std::string_view bytes = waiting.request.view();
    workspace.defer = true;
    Answered done;
    {
      const Permit permit(*this);
      done = protocol_->answer(connection, workspace, bytes, waiting.at_end);
    }
    if (done.done) {
      return reply_done(connection, workspace, waiting.start, waiting.admitted, record, parked);
    }
    // Line mode: the session goes on with this worker, with the start of the next line (if it
    // is large, in the room again at once).
    const std::string_view rest = bytes.substr(done.used);
    connection.deadline().set_end(rest.empty()
                                      ? Clock::time_point::max()
                                      : end_after(framing_->request_timeout, Clock::now()));
    if (rest_parked(connection, workspace, waiting.start, waiting.admitted, record, rest)) {
      parked = true;
      return false;
    }
    Buffer& buffer = workspace.buffer;
    buffer.clear();
    if (rest.size() > kEagerBytes) {
      if (!room_->park(connection, rest, waiting.start, waiting.admitted)) {
        throw ConnectionError(Outcome::too_large,
                              detail::over_max_total_bytes(framing_->budget->limit()));
      }
      parked = true;
      return false;
    }
    buffer.append(rest);
    return go_on(connection, workspace, waiting.start, record, parked);
  });
  if (parked) return;  // the room's again
  end(connection, record, answered, waiting.admitted, waiting.start);
}

void Server::end_waiting(detail::Waiting& waiting, Outcome outcome,
                         const std::string& detail) noexcept {
  ConnectionRecord record;
  // Ok: a line session that the stop ended between lines, closed cleanly.
  bool answered = outcome == Outcome::ok;
  if (waiting.replying) {
    record = std::move(*waiting.record);
    answered = waiting.written == waiting.request.size();
  }
  if (!answered) {
    record.outcome = outcome;
    try {
      record.detail = detail;
    } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the text; the outcome stands
    }
  }
  end(waiting.connection, record, answered, waiting.admitted, waiting.start);
}

void Server::end(Connection& connection, ConnectionRecord& record, bool answered, bool admitted,
                 Clock::time_point start) noexcept {
  // A connection that ends without its whole reply ends with a reset, so no client mistakes it
  // for an empty or a complete answer.
  if (answered) {
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
  give_slot();
}

ServerCore::Worker::Wait Server::take_slot() {
  if (!room_ || options_.max_connections == 0) return Worker::Wait::taken;
  std::unique_lock<std::mutex> lock(slots_mutex_);
  const auto free = [this] { return slots_ < options_.max_connections; };
  if (!free()) {
    const std::chrono::milliseconds idle = listener_.idle_timeout();
    const bool woken =
        slot_freed_.wait_for(lock, idle, [&] { return free() || listener_.interrupted(); });
    if (listener_.interrupted()) return Worker::Wait::stopped;
    if (!woken) return Worker::Wait::idle;
  }
  ++slots_;
  return Worker::Wait::taken;
}

void Server::give_slot() noexcept {
  if (!room_ || options_.max_connections == 0) return;
  {
    const std::lock_guard<std::mutex> lock(slots_mutex_);
    --slots_;
  }
  slot_freed_.notify_one();
}

unsigned Server::worker_limit(const Protocol* protocol, const ServerOptions& options) {
  if (protocol == nullptr || options.workers == 0) return options.workers;
  // Without the waiting room each open connection holds a worker: no more of them than the
  // connections allowed.
  const bool room = options.workers > 1 && protocol->framing().has_value();
  if (room || options.max_connections == 0) return options.workers;
  return std::min(options.workers, options.max_connections);
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
  counted(record.outcome, record.bytes_in, record.bytes_out);
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
