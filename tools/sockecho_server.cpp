// sockecho-server: the daemon. Flags in, library calls, one-line errors and exit codes out.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "options.hpp"
#include "sockecho/sockecho.hpp"

namespace {

constexpr std::chrono::milliseconds kLogDelay{50};

// Descriptors the daemon needs besides one per worker: stdin, stdout, stderr, the listener, and
// room for the C++ and sanitizer runtimes.
constexpr rlim_t kOwnDescriptors = 16;

// Every worker holds a descriptor number even while it waits in accept() (Linux reserves it
// before blocking), so a soft limit below workers + kOwnDescriptors would leave the workers
// beyond it failing with EMFILE for as long as the daemon runs. Raise the soft limit when it is
// short; refuse to start when the hard limit is.
void ensure_descriptors(unsigned workers) {
  const rlim_t needed = rlim_t{workers} + kOwnDescriptors;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    throw sockecho::os_error(errno, "getrlimit RLIMIT_NOFILE");
  }
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    throw std::runtime_error("--workers " + std::to_string(workers) + " needs " +
                             std::to_string(needed) + " open files, but the hard limit is " +
                             std::to_string(limit.rlim_max) +
                             " (ulimit -Hn); lower --workers or raise the limit");
  }
  limit.rlim_cur = needed;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    throw sockecho::os_error(errno, "setrlimit RLIMIT_NOFILE " + std::to_string(needed));
  }
}

// --unix-mode, --unix-group and --backlog for a --unix socket; an unknown group is a usage error.
sockecho::UnixOptions unix_options(const sockecho::cli::ServerSettings& settings) {
  sockecho::UnixOptions file;
  file.backlog = settings.backlog;
  if (settings.unix_mode) file.mode = *settings.unix_mode;
  if (settings.unix_group) {
    try {
      file.group = sockecho::find_group(*settings.unix_group);
    } catch (const std::invalid_argument& e) {
      throw sockecho::cli::UsageError(std::string("--unix-group: ") + e.what());
    }
  }
  return file;
}

// The socket a service manager passed on (systemd socket activation), if inherited_listener()
// found one, else one bound here.
sockecho::Listener listen_socket(const sockecho::cli::ServerSettings& settings,
                                 const sockecho::UnixOptions& unix_file,
                                 std::optional<sockecho::Listener> inherited,
                                 const sockecho::Logger& log) {
  if (inherited) {
    log.event(sockecho::LogLevel::normal,
              "socket-activation fd=" + std::to_string(inherited->fd()) +
                  " listen=" + inherited->address().to_string());
    return std::move(*inherited);
  }
  if (!settings.unix_path.empty()) {
    return sockecho::Listener::bind_unix(settings.unix_path, unix_file);
  }
  sockecho::ListenOptions listen;
  listen.backlog = settings.backlog;
  listen.reuse_port = settings.reuse_port;
  return sockecho::Listener::bind(settings.host, settings.port, listen);
}

// What --exec-timeout and --max-output allow each program, in --exec and --background alike:
// without --max-output, a program's reply may be as large as a request.
sockecho::ProgramLimits program_limits(const sockecho::cli::ServerSettings& settings) {
  sockecho::ProgramLimits limits;
  limits.timeout = settings.exec_timeout;
  limits.max_output = settings.max_output.value_or(settings.limits.max_bytes);
  return limits;
}

// The document's protocol that --mode names, answering with --prefix; or --exec's program.
std::shared_ptr<sockecho::Protocol> protocol_of(const sockecho::cli::ServerSettings& settings,
                                                const sockecho::Logger& log,
                                                sockecho::JobQueue* jobs) {
  if (jobs != nullptr) {
    return sockecho::echo_protocol(sockecho::background_handler(*jobs, settings.prefix),
                                   settings.limits);
  }
  if (!settings.exec.empty()) {
    sockecho::ExecOptions exec;
    exec.argv = settings.exec;
    exec.prefix = settings.prefix;
    exec.limits = program_limits(settings);
    exec.log = log;
    return sockecho::echo_protocol(sockecho::exec_handler(std::move(exec)), settings.limits);
  }
  sockecho::Handler handler = sockecho::prefix_handler(settings.prefix);
  if (settings.mode == sockecho::cli::Mode::line) {
    return sockecho::line_protocol(std::move(handler), settings.limits, settings.greeting);
  }
  return sockecho::echo_protocol(std::move(handler), settings.limits);
}

// The signals either server answers. The waiter blocks them in this thread, so it must come
// before the server starts its threads: they inherit the mask, and a signal delivered to one of
// them would take its default action. Coming after the logger is fine: the logger's thread
// blocks every signal itself as it starts.
// - SIGINT, SIGTERM and SIGHUP (the terminal went away) call `stop`, the same graceful way: a
//   default action would drop what is in flight. A second one ends the process at once with
//   that signal, after `abandon`.
// - SIGUSR1 writes a stats line; asked for by whoever sent it, so written even with --quiet.
// - SIGUSR2, SIGWINCH and SIGALRM mean nothing here, and their default actions would end the
//   daemon (SIGWINCH's does not, but a resized terminal is no event either).
// SIGPIPE stays ignored by main().
sockecho::SignalWaiter answer_signals(const std::function<void()>& stop,
                                      const std::function<void()>& abandon,
                                      const sockecho::Logger& log,
                                      const std::function<std::string()>& stats) {
  return sockecho::SignalWaiter({
      sockecho::OnSignal::stop(SIGINT, stop, abandon),
      sockecho::OnSignal::stop(SIGTERM, stop, abandon),
      sockecho::OnSignal::stop(SIGHUP, stop, abandon),
      sockecho::OnSignal::call(
          SIGUSR1, [&log, stats] { log.event(sockecho::LogLevel::quiet, "stats " + stats()); }),
      sockecho::OnSignal::ignore(SIGUSR2),
      sockecho::OnSignal::ignore(SIGWINCH),
      sockecho::OnSignal::ignore(SIGALRM),
  });
}

// --metrics, in two steps: its listener is bound before the ready line, so that a port in use
// stops the start; it serves once the ready line is out, and says where on a line of its own.
std::optional<sockecho::Listener> metrics_listener(const sockecho::cli::ServerSettings& settings) {
  if (!settings.metrics) return std::nullopt;
  return sockecho::Listener::bind(settings.metrics->host, settings.metrics->port);
}

void serve_metrics(std::optional<sockecho::MetricsListener>& into,
                   std::optional<sockecho::Listener>& listener, sockecho::Metrics& metrics,
                   const sockecho::ServerCore& served, const sockecho::Logger& log) {
  if (!listener) return;
  into.emplace(std::move(*listener), metrics, served, log);
  sockecho::cli::print(STDOUT_FILENO, "metrics on " + into->address().to_string() + "\n");
}

// --udp: the datagram server, with the same signals as the TCP one (stop on SIGINT, SIGTERM,
// SIGHUP; stats on SIGUSR1).
int serve_udp(const sockecho::cli::ServerSettings& settings) {
  sockecho::DatagramOptions options;
  options.max_growth = settings.prefix.size();
  options.max_bytes = settings.limits.max_bytes;
  options.rate_per_source = settings.udp_rate;
  options.log = sockecho::Logger::batched(STDERR_FILENO, settings.log_level, kLogDelay);
  sockecho::DatagramServer server(sockecho::DatagramSocket::bind(settings.host, settings.port),
                                  sockecho::prefix_handler(settings.prefix), std::move(options));
  // Datagrams have no durations to observe: the metrics are the server's counters alone.
  sockecho::Metrics metrics;
  metrics.add(server);
  std::optional<sockecho::Listener> metrics_at = metrics_listener(settings);
  const sockecho::Logger& log = server.options().log;
  const sockecho::SignalWaiter signals =
      answer_signals([&server] { server.stop(); }, {}, log,
                     [&server] { return sockecho::format_stats(server.stats()); });
  sockecho::cli::print(STDOUT_FILENO, "listening on " + server.name() + "\n");
  std::optional<sockecho::MetricsListener> metrics_server;
  serve_metrics(metrics_server, metrics_at, metrics, server, log);
  server.run();
  return 0;
}

int serve(const sockecho::cli::ServerSettings& settings) {
  if (settings.udp) return serve_udp(settings);
  if (!settings.exec.empty()) {
    try {
      (void)sockecho::find_program(settings.exec[0]);
    } catch (const std::system_error& e) {
      throw sockecho::cli::UsageError(std::string("--exec: ") + e.what());
    }
  }
  const sockecho::UnixOptions unix_file = unix_options(settings);
  ensure_descriptors(settings.options.workers);
  // inherited_listener() reads LISTEN_FDS and removes it from the environment, which is only safe
  // while no other thread runs: so before the logger's thread and StopOnSignals' thread start.
  std::optional<sockecho::Listener> inherited = sockecho::inherited_listener();
  sockecho::ServerOptions options = settings.options;
  // Lines are written in batches, at most kLogDelay late: one write() per batch instead of one
  // per connection, and a stalled reader of stderr costs lines, never service.
  options.log = sockecho::Logger::batched(STDERR_FILENO, settings.log_level, kLogDelay);
  sockecho::Listener listener =
      listen_socket(settings, unix_file, std::move(inherited), options.log);
  // --background: the queue and its job threads (which block every signal themselves).
  std::unique_ptr<sockecho::JobQueue> jobs;
  if (settings.background) {
    sockecho::JobOptions job_options;
    job_options.argv = settings.exec;
    job_options.limits = program_limits(settings);
    job_options.jobs = settings.jobs;
    job_options.queue = settings.queue;
    job_options.max_queued_bytes = settings.limits.max_total_bytes;
    job_options.log = options.log;
    jobs = std::make_unique<sockecho::JobQueue>(std::move(job_options));
  }
  std::shared_ptr<sockecho::Protocol> protocol = protocol_of(settings, options.log, jobs.get());
  sockecho::Metrics metrics;
  std::optional<sockecho::Listener> metrics_at = metrics_listener(settings);
  if (metrics_at) {
    options.on_connection = [&metrics](const sockecho::ConnectionRecord& record) {
      metrics.observe(record);
    };
  }
  sockecho::Server server(std::move(listener), std::move(protocol), std::move(options));
  metrics.add(server);
  if (jobs) metrics.add(*jobs);
  // A second stop signal ends the process at once: first, nothing the server started may
  // outlive it, and the log says what was lost (written directly: the batched log would not
  // get to write it).
  const std::function<void()> abandon = [&jobs] {
    if (!jobs) return;
    const auto [running, queued] = jobs->abandon();
    sockecho::Logger(STDERR_FILENO, sockecho::LogLevel::quiet)
        .event(sockecho::LogLevel::quiet, "jobs: abandoned running=" + std::to_string(running) +
                                              " (killed) queued=" + std::to_string(queued));
  };
  const sockecho::SignalWaiter signals = answer_signals(
      [&server, &settings] { server.stop_after(settings.drain_delay); }, abandon,
      server.options().log, [&server] { return sockecho::format_stats(server.stats()); });
  sockecho::cli::print(STDOUT_FILENO, "listening on " + server.address().to_string() + "\n");
  // Serves until the very end: during the drain below, /health answers 503.
  std::optional<sockecho::MetricsListener> metrics_server;
  serve_metrics(metrics_server, metrics_at, metrics, server, server.options().log);
  server.run();
  if (jobs) {
    // An acknowledged job is never dropped by a clean stop: every one runs first.
    jobs->drain();
    server.options().log.event(sockecho::LogLevel::normal,
                               "jobs: done " + sockecho::format_stats(jobs->stats()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything opens a descriptor: started with 0, 1 or 2 closed (as some supervisors do),
  // the listener or a connection would take that number, and log lines would go into it.
  try {
    sockecho::ensure_standard_descriptors();
  } catch (const std::exception& e) {
    sockecho::cli::print(STDERR_FILENO, std::string("sockecho-server: ") + e.what() + "\n");
    return 1;
  }
  // A closed stdout or stderr must cost a lost line, never the daemon. The library's own
  // writes to sockets never raise SIGPIPE (MSG_NOSIGNAL); this covers stdout and stderr.
  (void)std::signal(SIGPIPE, SIG_IGN);
  return sockecho::cli::run_program("sockecho-server", argc, argv, sockecho::cli::parse_server_args,
                                    sockecho::cli::server_usage, serve);
}
