// sockecho: a blocking server that runs connections; the protocol is handed to it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "sockecho/export.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server_core.hpp"

namespace sockecho {

inline constexpr unsigned kDefaultWorkers = 128;
// How long a worker beyond the first waits without a connection before it retires, when there
// is no idle limit to use for it.
inline constexpr std::chrono::seconds kIdleWithoutTimeout{30};
inline constexpr std::chrono::seconds kDefaultTimeout{30};

struct SOCKECHO_EXPORT ServerOptions {
  // The most connections served at once, one thread each; 1 serves strictly one connection after
  // another. Threads start as connections need them (one more whenever the last one waiting takes
  // a connection) and retire after an idle period (the timeout) without one, so a large number
  // costs nothing while idle.
  unsigned workers = kDefaultWorkers;
  // The idle limit of every connection the server accepts, whatever listener it came from
  // (bound, adopted from a service manager, or a library user's): closed when it makes no
  // progress for this long (see Connection). Zero: none. It is also how long a worker waits
  // without a connection before the protocol may free what it keeps for reuse.
  std::chrono::milliseconds timeout = kDefaultTimeout;
  // Connections at once from one client address (an IPv4 address, an IPv6 address; IPv4-mapped
  // IPv6 peers count as their IPv4 address; over a Unix socket, one user id:
  // Address::source_key()). One over it is reset as soon as it is accepted, outcome refused with
  // reason per_source. Zero: no limit.
  unsigned max_per_source = 0;
  // Where start, stop and per-connection lines go; quiet by default.
  Logger log;
  // Called on the worker thread after each connection closes. An exception it throws is logged
  // and contained, like a handler's.
  std::function<void(const ConnectionRecord&)> on_connection;
};

// Serves a listener with up to `workers` threads, each blocking in accept() on the shared socket
// and then serving its connection to the end with the protocol; while `workers` are busy, new
// connections wait in the kernel's backlog. stop() from any thread ends run() cleanly (see
// ServerCore for run, stop, stop_after and stats).
class SOCKECHO_EXPORT Server final : public ServerCore {
 public:
  // Throws std::invalid_argument when options.workers is 0 or there is no protocol, and
  // std::system_error when the listener cannot take the idle timeout.
  Server(Listener listener, std::shared_ptr<Protocol> protocol, ServerOptions options = {});
  ~Server() override { end_delayed_stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;

  [[nodiscard]] const Address& address() const noexcept { return listener_.address(); }
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }

  // sockecho_connections_* (accepted, by outcome, active), bytes, workers and sockecho_up.
  void collect(Exposition& out) const override;

 private:
  class SOCKECHO_NO_EXPORT StreamWorker;

  std::unique_ptr<Worker> make_worker() override;
  void interrupt() noexcept override { listener_.interrupt(); }
  [[nodiscard]] std::string describe() const override;
  [[nodiscard]] std::string stop_words(const ServerStats& stats) const override;
  [[nodiscard]] std::string stopping_line() const override;

  void serve(Connection& connection, Workspace& workspace);
  void finish(ConnectionRecord& record) noexcept;
  // Counts the connection against its source's limit: false (and not counted) when over it.
  bool admit(const Address& peer);
  void release(const Address& peer) noexcept;

  Listener listener_;
  std::shared_ptr<Protocol> protocol_;
  ServerOptions options_;
  // Connections open per source address, while max_per_source is set.
  std::mutex sources_mutex_;
  std::unordered_map<std::string, unsigned> sources_;
};

}  // namespace sockecho
