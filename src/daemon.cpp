#include "sockecho/daemon.hpp"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "sockecho/datagram_server.hpp"
#include "sockecho/error.hpp"
#include "sockecho/exec.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/metrics.hpp"
#include "sockecho/metrics_listener.hpp"
#include "sockecho/program.hpp"
#include "sockecho/signals.hpp"
#include "sockecho/status.hpp"
#include "sockecho/systemd.hpp"

namespace sockecho {

namespace {

// Lines are written in batches, at most this late: one write() per batch instead of one per
// connection, and a stalled reader of the log costs lines, never service.
constexpr std::chrono::milliseconds kLogDelay{50};

// Descriptors the daemon needs besides one per worker: stdin, stdout, stderr, the listener, and
// room for the C++ and sanitizer runtimes.
constexpr rlim_t kOwnDescriptors = 16;
// What one program run holds at most, while it starts: three pipes and its supervisor's socket
// (both ends of each).
constexpr rlim_t kPerProgram = 8;

// Every open connection holds a descriptor, up to --max-connections (a worker waiting in
// accept() holds the number its next connection gets, one of them): the soft limit is raised to
// what the connections, the listeners' own workers and the programs (--exec, a job each) need
// at once, or to the hard limit when that is less. The server's workers must fit below the hard
// limit: otherwise the start fails. --max-connections is lowered to what fits (the start line says
// what it is); a program run that still finds no descriptor is one failed request with its
// error line, never the daemon's end.
void ensure_descriptors(DaemonOptions& o) {
  const unsigned workers = o.options.workers;
  // The listeners of metrics and status have workers of their own, each holding a connection.
  // (A background server may be passed a status socket by its service manager.)
  const unsigned metrics =
      (o.metrics ? kMetricsWorkers : 0) + (o.status || o.background ? kStatusWorkers : 0);
  const rlim_t needed = rlim_t{workers} + metrics + kOwnDescriptors;
  rlim_t programs = 0;
  if (o.background) {
    programs = rlim_t{o.jobs} * kPerProgram;
  } else if (!o.exec.empty()) {
    programs = rlim_t{workers} * kPerProgram;
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) throw os_error(errno, "getrlimit RLIMIT_NOFILE");
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    const std::string who = "--workers " + std::to_string(workers) +
                            (metrics > 0 ? " with --metrics or --status need " : " needs ");
    throw std::runtime_error(who + std::to_string(needed) + " open files, but the hard limit is " +
                             std::to_string(limit.rlim_max) +
                             " (ulimit -Hn); lower --workers or raise the limit");
  }
  // Connections beyond the workers', held without a worker.
  rlim_t held = 0;
  unsigned& most = o.options.max_connections;
  if (most > workers) {
    held = most - workers;
    if (limit.rlim_max != RLIM_INFINITY && needed + held + programs > limit.rlim_max) {
      held = limit.rlim_max - needed > programs ? limit.rlim_max - needed - programs : 0;
      most = workers + static_cast<unsigned>(held);
    }
  }
  rlim_t wanted = needed + held + programs;
  if (limit.rlim_max != RLIM_INFINITY) wanted = std::min(wanted, limit.rlim_max);
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= wanted) return;
  limit.rlim_cur = wanted;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    throw os_error(errno, "setrlimit RLIMIT_NOFILE " + std::to_string(wanted));
  }
}

// --unix-mode, --unix-group and --backlog for a --unix socket.
UnixOptions unix_options(const DaemonOptions& o) {
  UnixOptions file;
  file.backlog = o.backlog;
  if (o.unix_mode) file.mode = *o.unix_mode;
  if (o.unix_group) {
    try {
      file.group = find_group(*o.unix_group);
    } catch (const std::invalid_argument& e) {
      throw OptionError("--unix-group", e.what());
    }
  }
  return file;
}

// A Unix socket file at `path` for `flag` (--unix, --status unix:). A directory that does not
// exist is said by name ("No such file or directory" alone does not say which part is missing).
Listener bind_unix_for(std::string_view flag, const std::string& path, const UnixOptions& file) {
  try {
    return Listener::bind_unix(path, file);
  } catch (const std::system_error& e) {
    const std::string::size_type slash = path.rfind('/');
    if (e.code() != std::errc::no_such_file_or_directory || path.front() == '@' ||
        slash == std::string::npos || slash == 0) {
      throw;
    }
    const std::string dir = path.substr(0, slash);
    struct stat info {};
    if (::stat(dir.c_str(), &info) == 0) throw;
    throw std::runtime_error(std::string(flag) + ": " + e.what() + ": the directory " + dir +
                             " does not exist (create it first: mkdir -p " + dir +
                             ", or RuntimeDirectory= under systemd)");
  }
}

// A listener of the daemon's own besides the served one (--metrics, --status), bound now so a
// failure stops the start; its error names the flag.
Listener bind_flag(std::string_view flag, const ListenAddress& at, const UnixOptions& unix_file) {
  try {
    if (!at.unix_path.empty()) return bind_unix_for(flag, at.unix_path, unix_file);
    return Listener::bind(at.host, at.port);
  } catch (const std::system_error& e) {
    // std::system_error appends the code's message to what it is given: give it the text
    // without it, or the reason would be said twice.
    std::string what = e.what();
    const std::string reason = ": " + e.code().message();
    if (what.size() >= reason.size() &&
        what.compare(what.size() - reason.size(), reason.size(), reason) == 0) {
      what.resize(what.size() - reason.size());
    }
    throw std::system_error(e.code(), std::string(flag) + ": " + what);
  }
}

// The socket a service manager passed on, if there is one, else one bound here.
Listener listen_socket(const DaemonOptions& o, const UnixOptions& unix_file,
                       std::optional<Listener> inherited, const Logger& log) {
  if (inherited) {
    log.event(LogLevel::normal, "socket-activation fd=" + std::to_string(inherited->fd()) +
                                    " listen=" + inherited->address().to_string());
    return std::move(*inherited);
  }
  if (!o.unix_path.empty()) return bind_unix_for("--unix", o.unix_path, unix_file);
  ListenOptions listen;
  listen.backlog = o.backlog;
  listen.reuse_port = o.reuse_port;
  return Listener::bind(o.host, o.port, listen);
}

// What --exec-timeout, --max-output, --job-memory and --job-cpu allow each program, in --exec
// and --background alike: without --max-output, a program's reply may be as large as a request.
ProgramLimits program_limits(const DaemonOptions& o) {
  ProgramLimits limits;
  limits.timeout = o.exec_timeout;
  limits.max_output = o.max_output.value_or(o.limits.max_bytes);
  limits.memory = o.job_memory;
  limits.cpu = o.job_cpu;
  return limits;
}

// The handler a request gets: the library user's own, the job queue's, --exec's program, or
// sockecho-server's prefix.
// What the spool held at the start: one line with the counts, and one for each record skipped.
void log_spool(const Spool& spool, const SpoolFound& found, const Logger& log) {
  const SpoolReport& report = spool.report();
  for (const SpoolDamage& place : report.places) {
    log.event(LogLevel::quiet, std::string("spool: ") + (place.torn ? "torn" : "damaged") +
                                   " record skipped file=" + place.file +
                                   " offset=" + std::to_string(place.offset));
  }
  log.event(LogLevel::normal,
            "spool: dir=" + spool.dir() + " files=" + std::to_string(report.files) + " records=" +
                std::to_string(report.records) + " queued=" + std::to_string(found.queued) +
                " retrying=" + std::to_string(found.retrying) + " interrupted=" +
                std::to_string(found.interrupted) + " ended=" + std::to_string(found.ended) +
                " damaged=" + std::to_string(report.damaged + report.torn));
}

Handler handler_of(const DaemonOptions& o, const Logger& log, JobQueue* jobs) {
  if (o.handler) return o.handler;
  if (jobs != nullptr) return background_handler(*jobs, o.prefix);
  if (!o.exec.empty()) {
    ExecOptions exec;
    exec.argv = o.exec;
    exec.prefix = o.prefix;
    exec.limits = program_limits(o);
    exec.log = log;
    return exec_handler(std::move(exec));
  }
  return prefix_handler(o.prefix);
}

}  // namespace

struct Daemon::Parts {
  explicit Parts(DaemonOptions o) : options(std::move(o)) {}

  void build_stream(const UnixOptions& unix_file, InheritedSockets inherited);
  void build_datagram();
  // The signals either server answers. The waiter blocks them in this thread, so it must come
  // before the server starts its threads: they inherit the mask, and a signal delivered to one
  // of them would take its default action. The logger's and the job queue's threads block every
  // signal themselves. SIGPIPE is the program's to ignore (sockecho writes with MSG_NOSIGNAL).
  SignalWaiter answer_signals();
  // A first stop signal: stop taking work once the drain delay is over.
  void stop() noexcept { server->stop_after(options.drain_delay); }
  void abandon() noexcept;

  DaemonOptions options;
  Logger log;
  std::unique_ptr<JobQueue> jobs;
  Metrics metrics;
  std::optional<Listener> metrics_at;  // bound at once, served once the ready line is out
  std::optional<Listener> status_at;   // bound at once, served from run() to its end
  std::unique_ptr<ServerCore> server;
  std::string name;
};

void Daemon::Parts::build_stream(const UnixOptions& unix_file, InheritedSockets inherited) {
  Listener listener = listen_socket(options, unix_file, std::move(inherited.main), log);
  if (inherited.status) {
    if (!options.background) {
      throw std::runtime_error(
          "a socket named 'status' was passed (LISTEN_FDNAMES), but only --background has jobs "
          "to ask about");
    }
    log.event(LogLevel::normal, "socket-activation fd=" + std::to_string(inherited.status->fd()) +
                                    " status=" + inherited.status->address().to_string());
    status_at = std::move(inherited.status);
  }
  // One budget for request buffers and job inputs, so max_total_bytes bounds both together.
  Limits limits = options.limits;
  limits.budget = std::make_shared<MemoryBudget>(limits.max_total_bytes);
  if (options.background) {
    JobOptions job_options;
    job_options.argv = options.exec;
    job_options.limits = program_limits(options);
    job_options.jobs = options.jobs;
    job_options.queue = options.queue;
    job_options.budget = limits.budget;
    job_options.log = log;
    job_options.max_attempts = options.max_attempts;
    job_options.retry_delay = options.retry_delay;
    job_options.keep = options.keep;
    job_options.keep_max = options.keep_max;
    job_options.max_queued_per_source = options.max_queued_per_source;
    job_options.turns = options.job_turns;
    // With somewhere to ask for it, a job's stdout is its result, not log lines.
    job_options.output_is_result = options.status.has_value() || status_at.has_value();
    if (!options.spool.empty()) {
      try {
        job_options.spool = std::make_shared<Spool>(Spool::open(options.spool));
      } catch (const SpoolError& e) {
        throw std::runtime_error("--spool " + options.spool + ": " + e.what());
      }
    }
    std::shared_ptr<Spool> spool = job_options.spool;
    jobs = std::make_unique<JobQueue>(std::move(job_options));
    if (spool) log_spool(*spool, jobs->found(), log);
  }
  Handler handler = handler_of(options, log, jobs.get());
  std::shared_ptr<Protocol> protocol;
  if (options.mode == Mode::line) {
    protocol = line_protocol(std::move(handler), std::move(limits), options.greeting);
  } else {
    protocol = echo_protocol(std::move(handler), std::move(limits));
  }
  ServerOptions server_options = options.options;
  server_options.log = log;
  if (options.metrics) {
    server_options.on_connection = [this](const ConnectionRecord& record) {
      metrics.observe(record);
    };
  }
  auto stream =
      std::make_unique<Server>(std::move(listener), std::move(protocol), std::move(server_options));
  name = stream->address().to_string();
  server = std::move(stream);
}

void Daemon::Parts::build_datagram() {
  DatagramOptions datagram;
  datagram.max_growth = options.prefix.size();
  datagram.max_bytes = options.limits.max_bytes;
  datagram.rate_per_source = options.udp_rate.value_or(kDefaultDatagramRate);
  datagram.bytes_per_source = options.udp_rate_bytes.value_or(kDefaultDatagramBytes);
  datagram.log = log;
  Handler handler = options.handler ? options.handler : prefix_handler(options.prefix);
  auto udp = std::make_unique<DatagramServer>(DatagramSocket::bind(options.host, options.port),
                                              std::move(handler), std::move(datagram));
  name = udp->name();
  server = std::move(udp);
}

SignalWaiter Daemon::Parts::answer_signals() {
  const std::function<void()> stop = [this] { this->stop(); };
  const std::function<void()> second = [this] { abandon(); };
  return SignalWaiter({
      OnSignal::stop(SIGINT, stop, second),
      OnSignal::stop(SIGTERM, stop, second),
      OnSignal::stop(SIGHUP, stop, second),
      // Asked for by whoever sent it, so written even with --quiet.
      OnSignal::call(
          SIGUSR1,
          [this] { log.event(LogLevel::quiet, "stats " + format_stats(server->stats())); }),
      OnSignal::ignore(SIGUSR2),
      OnSignal::ignore(SIGWINCH),
      OnSignal::ignore(SIGALRM),
  });
}

void Daemon::Parts::abandon() noexcept {
  // Nothing the daemon started may outlive it, and the log says what was lost. The process
  // ends as soon as this returns, without its destructors: what the batched log holds (the
  // lines of its last 50 ms, this one too) is written first.
  if (jobs) {
    const auto [running, queued] = jobs->abandon();
    try {
      log.event(LogLevel::quiet, "jobs: abandoned running=" + std::to_string(running) +
                                     " (killed) queued=" + std::to_string(queued));
    } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the end goes on
    }
  }
  log.flush();
}

Daemon::Daemon(DaemonOptions options) : parts_(std::make_unique<Parts>(std::move(options))) {
  Parts& p = *parts_;
  const DaemonOptions& o = p.options;
  if (o.udp) {
    p.log = Logger::batched(o.log_fd, o.log_level, kLogDelay);
    p.build_datagram();
  } else {
    if (!o.exec.empty() && !o.handler) {
      try {
        (void)find_program(o.exec[0]);
      } catch (const std::system_error& e) {
        throw OptionError("--exec", e.what());
      }
    }
    const UnixOptions unix_file = unix_options(o);  // an unknown group is a usage error
    ensure_descriptors(p.options);
    // The process that starts programs is forked now, while this one is small and has no
    // other thread: every program's start forks from it (see supervisor.hpp).
    if (!o.exec.empty() && !o.handler) prepare_programs();
    // inherited_sockets() reads LISTEN_FDS and removes it from the environment, which is only
    // safe while no other thread runs: so before the logger's thread starts.
    InheritedSockets inherited;
    if (o.socket_activation) inherited = inherited_sockets();
    p.log = Logger::batched(o.log_fd, o.log_level, kLogDelay);
    p.build_stream(unix_file, std::move(inherited));
  }
  if (o.metrics) {
    p.metrics_at = bind_flag("--metrics", ListenAddress{o.metrics->host, o.metrics->port, {}}, {});
  }
  // A status socket passed by a service manager is served instead of binding --status.
  if (o.status && p.jobs && !p.status_at) {
    p.status_at = bind_flag("--status", *o.status, unix_options(o));
  }
  p.metrics.add(*p.server);
  if (p.jobs) p.metrics.add(*p.jobs);
}

Daemon::~Daemon() = default;

void Daemon::run(const std::function<void(const std::string& line)>& say) {
  Parts& p = *parts_;
  const SignalWaiter signals = p.answer_signals();
  // Answers from now until the very end, through the whole drain of the jobs.
  std::unique_ptr<StatusListener> status;
  if (p.status_at) {
    StatusOptions status_options;
    status_options.timeout = p.options.options.timeout;
    status_options.request_timeout = p.options.limits.request_timeout;
    status_options.log = p.log;
    status = std::make_unique<StatusListener>(std::move(*p.status_at), *p.jobs, status_options);
    p.status_at.reset();
    p.metrics.add(*status);
  }
  if (p.jobs) {
    // The start line (the server's, next) says how it listens; this one what it runs.
    p.log.event(
        LogLevel::normal,
        "jobs: start mode=background program=" +
            (p.options.exec.empty() ? std::string("none") : log_quoted(p.options.exec.front())) +
            " jobs=" + std::to_string(p.options.jobs) +
            " queue=" + std::to_string(p.options.queue) + " spool=" +
            (p.options.spool.empty() ? std::string("none") : log_quoted(p.options.spool)));
  }
  say("listening on " + p.name);
  // Serves until the very end: during the drain below, /health answers 503.
  std::optional<MetricsListener> metrics;
  if (p.metrics_at) {
    metrics.emplace(std::move(*p.metrics_at), p.metrics, *p.server, p.log);
    p.metrics_at.reset();
    say("metrics on " + metrics->address().to_string());
  }
  if (status) say("status on " + status->address().to_string());
  p.server->run();
  if (p.jobs) {
    // An acknowledged job is never dropped by a clean stop: every one runs first.
    p.jobs->drain();
    p.log.event(LogLevel::normal, "jobs: done " + format_stats(p.jobs->stats()));
  }
}

void Daemon::stop() noexcept { parts_->stop(); }

std::string Daemon::name() const { return parts_->name; }

ServerStats Daemon::stats() const noexcept { return parts_->server->stats(); }

}  // namespace sockecho
