// sockecho: a blocking server that runs connections; the protocol is handed to it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

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
inline constexpr unsigned kDefaultMaxConnections = 10000;
// How long a worker reads a new connection's request before it hands an incomplete one to the
// waiting room (a protocol that declares its framing, more than one worker): a request complete
// within it is answered by that worker with no other thread involved.
inline constexpr std::chrono::milliseconds kGrace{2};
// The most of a request a worker reads within the grace: a larger one goes to the waiting room.
inline constexpr std::size_t kEagerBytes = std::size_t{1} << 20;

namespace detail {
class WaitingRoom;
struct Waiting;
}  // namespace detail

struct SOCKECHO_EXPORT ServerOptions {
  // The most requests handled at once, one thread each; 1 serves strictly one connection after
  // another. With a protocol that declares its framing (echo, line) and more than one worker, a
  // connection whose request is not complete within kGrace waits in the waiting room, holding
  // no worker; otherwise a worker holds a connection from accept to close. Threads start as
  // work needs them (one more whenever the last one waiting takes some) and retire after an
  // idle period (the timeout) without any, so a large number costs nothing while idle.
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
  // Connections open at once, wherever they are: being read, waiting without a worker, being
  // answered. At the limit the server accepts no more, and new ones wait in the kernel's
  // backlog until one ends. Zero: no limit. A server that holds a worker per connection (one
  // worker, or a protocol that declares no framing) has at most `workers` open anyway.
  unsigned max_connections = kDefaultMaxConnections;
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
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;

  [[nodiscard]] const Address& address() const noexcept { return listener_.address(); }
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }
  // Connections open and held by no worker now (in the waiting room, or complete and queued).
  [[nodiscard]] std::uint64_t waiting() const noexcept;
  // The most connections open at once: max_connections with a waiting room (0: no limit), the
  // workers without one.
  [[nodiscard]] unsigned connections_max() const noexcept;

  // sockecho_connections_* (accepted, by outcome, active), bytes, workers and sockecho_up.
  void collect(Exposition& out) const override;

 private:
  class SOCKECHO_NO_EXPORT StreamWorker;
  class SOCKECHO_NO_EXPORT Permit;

  std::unique_ptr<Worker> make_worker() override;
  void interrupt() noexcept override;
  [[nodiscard]] std::string describe() const override;
  [[nodiscard]] std::string stop_words(const ServerStats& stats) const override;
  [[nodiscard]] std::string stopping_line() const override;
  void after_workers() noexcept override;
  // The --max-connections slots, with a room: one is taken before each accept (waiting, in
  // the kernel's backlog, while none is free) and given back when the connection ends.
  Worker::Wait take_slot();
  void give_slot() noexcept;
  // The crew: threads that answer requests completed in the room, started as they are needed
  // (up to the workers), retired after an idle period, joined at the end of run().
  void crew_needed() noexcept;
  void grow_crew() noexcept;          // with crew_mutex_ held
  void start_crew_thread() noexcept;  // with crew_mutex_ held
  void crew_work() noexcept;
  static unsigned worker_limit(const Protocol* protocol, const ServerOptions& options);

  void serve(Connection& connection, Workspace& workspace);
  // The waiting room's side: a new connection read eagerly and answered or parked; a request
  // completed in the room answered; a held connection the room gave up on ended.
  bool serve_eagerly(Connection& connection, Workspace& workspace, Clock::time_point start,
                     ConnectionRecord& record, bool& parked);
  void serve_waiting(detail::Waiting& waiting, Workspace& workspace);
  // Reads and answers a connection's requests in this worker for as long as they come within
  // the grace (line mode: line after line); then parks it. True when a whole last reply went out.
  bool go_on(Connection& connection, Workspace& workspace, Clock::time_point start,
             ConnectionRecord& record, bool& parked);
  // After the last reply: a reply the client has not read yet goes to the room (parked) while
  // the budget has room for it. True when a whole reply went out.
  bool reply_done(Connection& connection, Workspace& workspace, Clock::time_point start,
                  bool admitted, ConnectionRecord& record, bool& parked);
  // After a reply: the rest the client has not read yet (Workspace::unsent) goes to the room
  // while the budget has room for it, and with `next` (line mode: the next line's bytes read
  // already) the session goes on there once the rest is taken. True when it did (parked);
  // false when the whole reply went out.
  bool rest_parked(Connection& connection, Workspace& workspace, Clock::time_point start,
                   bool admitted, const ConnectionRecord& record,
                   std::optional<std::string_view> next);
  void end_waiting(detail::Waiting& waiting, Outcome outcome, const std::string& detail) noexcept;
  // Closes (answered) or resets the connection, gives back its source's count, and counts and
  // logs it.
  void end(Connection& connection, ConnectionRecord& record, bool answered, bool admitted,
           Clock::time_point start) noexcept;
  void finish(ConnectionRecord& record) noexcept;
  // Counts the connection against its source's limit: false (and not counted) when over it.
  bool admit(const Address& peer);
  void release(const Address& peer) noexcept;

  Listener listener_;
  std::shared_ptr<Protocol> protocol_;
  ServerOptions options_;
  std::optional<Framing> framing_;             // the protocol's, when the room is used
  std::unique_ptr<detail::WaitingRoom> room_;  // with framing and more than one worker
  // With a room: requests answered at once (Permit), connections open (slots), the crew.
  std::mutex permits_mutex_;
  std::condition_variable permit_freed_;
  unsigned permits_ = 0;
  std::mutex slots_mutex_;
  std::condition_variable slot_freed_;
  unsigned slots_ = 0;
  std::mutex crew_mutex_;
  std::vector<std::thread> crew_;
  std::vector<std::thread::id> crew_retired_;
  unsigned crew_running_ = 0;
  unsigned crew_idle_ = 0;
  // Connections open per source address, while max_per_source is set.
  std::mutex sources_mutex_;
  std::unordered_map<std::string, unsigned> sources_;
};

}  // namespace sockecho
