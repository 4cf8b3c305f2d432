// sockecho: the daemon as a library type. A Daemon is what sockecho-server is: it binds its
// listener (or takes the one a service manager passed), builds the protocol, the job queue and
// the metrics listener its options ask for, answers the stop signals, and stops in order (drain,
// jobs, end lines). sockecho-server parses its flags into DaemonOptions and runs one; a daemon of
// your own sets the options it needs (a handler of its own, say) and does the same.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/jobs.hpp"
#include "sockecho/log.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/server.hpp"

namespace sockecho {

inline constexpr std::uint16_t kDefaultPort = 12387;
inline constexpr std::string_view kDefaultHost = "127.0.0.1";
inline constexpr std::chrono::seconds kDefaultExecTimeout{30};

// Which protocol: echo_protocol() or line_protocol().
enum class Mode {
  echo,  // read until the client half-closes, answer once, close
  line,  // greet, then answer each '\n'-terminated line until the client closes
};

// HOST:PORT, as --metrics takes it ("127.0.0.1:9100", "[::1]:0").
struct SOCKECHO_EXPORT Endpoint {
  std::string host;
  std::uint16_t port = 0;
};

// HOST:PORT or unix:PATH, as --status takes it: a TCP endpoint, or a Unix socket's path (set
// instead of host and port; "@NAME" for an abstract one).
struct SOCKECHO_EXPORT ListenAddress {
  std::string host;
  std::uint16_t port = 0;
  std::string unix_path;
};

// What a Daemon does. Each member is a flag of sockecho-server (named in its comment; its man
// page has the whole story), with the same default, and the daemon's messages name the flags.
struct SOCKECHO_EXPORT DaemonOptions {
  std::string host{kDefaultHost};               // --host
  std::uint16_t port = kDefaultPort;            // --port (0: a free one)
  std::string unix_path;                        // --unix PATH instead of TCP; empty: TCP
  std::optional<mode_t> unix_mode;              // --unix-mode; unset: 0660
  std::optional<std::string> unix_group;        // --unix-group, looked up at the start
  int backlog = SOMAXCONN;                      // --backlog
  bool reuse_port = false;                      // --reuseport
  bool udp = false;                             // --udp: datagrams instead of connections
  std::optional<unsigned> udp_rate;             // --udp-rate; unset: kDefaultDatagramRate
  std::optional<std::uint64_t> udp_rate_bytes;  // --udp-rate-bytes; unset: kDefaultDatagramBytes
  Mode mode = Mode::echo;                       // --mode
  std::string prefix{kServerDefaultPrefix};     // --prefix
  std::string greeting{kDefaultGreeting};       // --greeting (line mode)
  std::vector<std::string> exec;                // --exec PROGRAM [ARG]...; empty: the echo
  std::chrono::milliseconds exec_timeout = kDefaultExecTimeout;  // --exec-timeout
  std::optional<std::size_t> max_output;  // --max-output; unset: limits.max_bytes
  std::uint64_t job_memory = 0;           // --job-memory: each run's resident bytes; 0: none
  std::chrono::seconds job_cpu{0};        // --job-cpu: each run's CPU time; 0: none
  bool background = false;                // --background: acknowledge, run the program later
  unsigned jobs = kDefaultJobs;           // --jobs
  std::size_t queue = kDefaultQueue;      // --queue
  std::string spool;                      // --spool DIR: jobs kept on disk; empty: in memory
  std::optional<ListenAddress> status;    // --status ADDR: where jobs are asked about; unset: none
  std::chrono::milliseconds retry_delay = kDefaultRetryDelay;  // --retry-delay
  unsigned max_attempts = kDefaultMaxAttempts;                 // --max-attempts
  std::chrono::milliseconds keep = kDefaultKeep;               // --keep
  std::size_t keep_max = kDefaultKeepMax;                      // --keep-max
  std::size_t max_queued_per_source = 0;                       // --max-queued-per-source (0: none)
  // --max-bytes, --max-total-bytes (one budget for request buffers and job inputs together),
  // --request-timeout.
  Limits limits;
  // --workers, --timeout, --max-per-source. Its log and on_connection are the daemon's own.
  ServerOptions options;
  std::optional<Endpoint> metrics;           // --metrics HOST:PORT
  std::chrono::milliseconds drain_delay{0};  // --drain-delay
  LogLevel log_level = LogLevel::normal;     // --quiet, --verbose

  // Of the library alone: where log lines go (sockecho-server: stderr); a handler of your own in
  // place of the prefix (or --exec's program), for any protocol or --udp; and whether a socket a
  // service manager passed (LISTEN_FDS) is taken instead of binding one.
  int log_fd = STDERR_FILENO;
  Handler handler;
  bool socket_activation = true;
  // Whether queued jobs start in turns between sources (JobOptions::turns); off, strictly in the
  // order they came (what bench/jobs.py --fairness compares turns with).
  bool job_turns = true;
};

// An option the daemon cannot use, found only when it starts (a program not on PATH, an unknown
// group): what() is "--flag: reason". sockecho-server exits 2 on it, as on any usage error.
class SOCKECHO_EXPORT OptionError : public std::invalid_argument {
 public:
  OptionError(std::string_view flag, const std::string& why)
      : std::invalid_argument(std::string(flag) + ": " + why) {}
};

class SOCKECHO_EXPORT Daemon {
 public:
  // Makes everything that can fail before serving: the descriptor limit (raised to what the
  // workers need), the listener (bound, or taken over from a service manager: so construct the
  // Daemon before starting any thread of your own), the metrics listener, the job queue.
  // Throws OptionError, std::system_error (bind 127.0.0.1:12387: Address already in use) or
  // std::runtime_error for a start that cannot work (a hard descriptor limit too low for the
  // workers, a spool that cannot be opened, a socket named "status" passed without background
  // jobs).
  explicit Daemon(DaemonOptions options);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  Daemon(Daemon&&) = delete;
  Daemon& operator=(Daemon&&) = delete;
  ~Daemon();

  // Serves until SIGINT, SIGTERM or SIGHUP (waited for on a thread of its own; SIGUSR1 logs a
  // stats line, SIGUSR2, SIGWINCH and SIGALRM are ignored) or stop(); then stops taking work
  // (after drain_delay), finishes what is in flight, runs every acknowledged job, and returns. A
  // second stop signal kills the running jobs' groups and ends the process. `say` gets the lines
  // a supervisor waits for: "listening on ADDRESS" as soon as it listens, and "metrics on
  // ADDRESS" once /metrics is served. Call it once.
  void run(const std::function<void(const std::string& line)>& say);
  // As a first stop signal. Safe from any thread, before or during run().
  void stop() noexcept;

  // "127.0.0.1:12387", "[::1]:12387", "unix:/run/x.sock", "udp:127.0.0.1:12387".
  [[nodiscard]] std::string name() const;
  // The counters of the connections (or datagrams) served so far.
  [[nodiscard]] ServerStats stats() const noexcept;

 private:
  struct SOCKECHO_NO_EXPORT Parts;
  std::unique_ptr<Parts> parts_;
};

}  // namespace sockecho
