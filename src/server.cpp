#include "sockecho/server.hpp"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace sockecho {

namespace {

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

// How the protocol ended the connection: the outcome of the reply it left in the workspace, or
// of what it threw. True when a whole reply went out, whatever the outcome.
bool serve_with(Protocol& protocol, Connection& connection, Workspace& workspace,
                ConnectionRecord& record) {
  workspace.reply.clear();
  try {
    protocol.serve(connection, workspace);
    const Reply& reply = workspace.reply;
    record.outcome = reply.outcome();
    if (!reply.fields().empty()) record.fields = reply.fields();  // ok too: "job=ID"
    if (record.outcome == Outcome::ok) return true;
    record.detail = reply.detail();
    return reply.answered();
  } catch (const ConnectionError& e) {
    record.outcome = e.outcome();
    record.fields = e.fields();
    record.detail = e.what();
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
  return false;
}

}  // namespace

// A worker of a stream server: a connection taken from the listener, served with the
// protocol's state kept from one connection to the next.
class Server::StreamWorker final : public Worker {
 public:
  explicit StreamWorker(Server& server) : server_(server) { workspace_.stop_fd = server.stop_fd(); }

  Wait wait() override {
    connection_ = server_.listener_.accept_or_idle();
    if (!connection_) return Wait::stopped;
    return connection_->is_open() ? Wait::taken : Wait::idle;
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

Server::Server(Listener listener, std::shared_ptr<Protocol> protocol, ServerOptions options)
    : ServerCore(Transport::stream, options.workers, options.log),
      listener_(std::move(listener)),
      protocol_(std::move(protocol)),
      options_(std::move(options)) {
  if (!protocol_) throw std::invalid_argument("protocol is empty");
  options_.timeout = std::max(options_.timeout, std::chrono::milliseconds(0));
  // How long a worker waits for a connection before the protocol may free what it keeps and an
  // extra worker retires: the idle limit, or kIdleWithoutTimeout when there is none.
  listener_.set_idle_timeout(options_.timeout.count() > 0 ? options_.timeout : kIdleWithoutTimeout);
  protocol_->idle_every(options_.timeout);
}

std::unique_ptr<ServerCore::Worker> Server::make_worker() {
  return std::make_unique<StreamWorker>(*this);
}

std::string Server::describe() const {
  return "listen=" + address().to_string() + " " + protocol_->describe() +
         " workers=" + std::to_string(options_.workers) +
         " timeout_ms=" + std::to_string(options_.timeout.count()) +
         " max_per_source=" + std::to_string(options_.max_per_source);
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
  out.single("sockecho_connections_active", "gauge", "Connections being served now.", s.active);
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
  arrived();
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
    answered = serve_with(*protocol_, connection, workspace, record);
  }
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
