#include "sockecho/program.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"
#include "supervisor.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace sockecho {

namespace {

constexpr std::size_t kChunk = std::size_t{64} << 10;
// Longest wait for a program's start: a supervisor is ready at once unless processes cannot be
// forked (RLIMIT_NPROC, memory), which is then an error, not a worker stuck for good.
constexpr std::chrono::seconds kMostStartWait{10};
// A stderr line longer than this is passed on in pieces of this size.
constexpr std::size_t kLongestLogLine = 4096;

std::string name_of(const std::vector<std::string>& argv) { return argv.empty() ? "" : argv[0]; }

bool executable_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

// The environment for the program: this process's, with `extra` added or replacing.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  const auto overridden = [&](std::string_view entry) {
    const std::string_view name = entry.substr(0, entry.find('='));
    return std::any_of(extra.begin(), extra.end(), [&](const std::string& e) {
      return std::string_view(e).substr(0, e.find('=')) == name;
    });
  };
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (!overridden(*entry)) env.emplace_back(*entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// For a descriptor just made, whose status flags are known to be none: one call, not two.
void set_nonblocking(int fd, const std::string& what) {
  if (::fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
    throw os_error(errno, "fcntl O_NONBLOCK " + what);
  }
}

// The files to try to exec for `name`: itself when it has a '/', else each directory of PATH,
// as posix_spawnp would search it.
std::vector<std::string> exec_candidates(const std::string& name) {
  if (name.find('/') != std::string::npos) return {name};
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/bin:/usr/bin";
  std::vector<std::string> files;
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    files.push_back((end > start ? dirs.substr(start, end - start) : std::string(".")) + '/' +
                    name);
    start = end + 1;
  }
  return files;
}

// Passes stderr on line by line, within a byte budget.
class LogLines {
 public:
  LogLines(std::size_t budget, const std::function<void(std::string_view)>& sink)
      : budget_(budget), sink_(sink) {}

  void add(std::string_view bytes) {
    pending_.append(bytes);
    std::size_t start = 0;
    for (;;) {
      const std::size_t end = pending_.find('\n', start);
      if (end == std::string::npos) break;
      emit(std::string_view(pending_).substr(start, end - start));
      start = end + 1;
    }
    pending_.erase(0, start);
    while (pending_.size() >= kLongestLogLine) {
      emit(std::string_view(pending_).substr(0, kLongestLogLine));
      pending_.erase(0, kLongestLogLine);
    }
  }
  void finish() {
    if (!pending_.empty()) emit(pending_);
    pending_.clear();
  }
  [[nodiscard]] std::size_t dropped() const noexcept { return dropped_; }

 private:
  void emit(std::string_view line) {
    if (!sink_ || line.size() > budget_) {
      dropped_ += line.size();
      budget_ = 0;
      return;
    }
    budget_ -= line.size();
    sink_(line);
  }

  std::size_t budget_;
  const std::function<void(std::string_view)>& sink_;
  std::string pending_;
  std::size_t dropped_ = 0;
};

// Reads what is there; false at the end of the stream (or an error: the program is gone).
bool drain(Fd& fd, const std::function<void(std::string_view)>& take) {
  std::array<char, 16384> chunk{};
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd.get(), chunk.data(), chunk.size()); });
    if (n > 0) {
      take(std::string_view(chunk.data(), static_cast<std::size_t>(n)));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    fd.reset();
    return false;
  }
}

}  // namespace

Outcome ProgramResult::outcome() const noexcept {
  switch (end) {
    case End::exited:
      return code == 0 && over == Over::none ? Outcome::ok : Outcome::failed;
    case End::signaled:
      return Outcome::failed;
    case End::timed_out:
      return Outcome::timeout;
    case End::too_large:
      return Outcome::too_large;
  }
  return Outcome::failed;
}

std::string ProgramResult::describe() const {
  std::string words;
  switch (end) {
    case End::exited:
      words = "exit=" + std::to_string(code);
      break;
    case End::signaled: {
      const char* abbrev = ::sigabbrev_np(code);
      words =
          abbrev != nullptr ? "signal=SIG" + std::string(abbrev) : "signal=" + std::to_string(code);
      break;
    }
    case End::timed_out:
      words = "timeout";
      break;
    case End::too_large:
      words = "too_large";
      break;
  }
  if (over != Over::none) {
    words += " reason=";
    words += reason();
  }
  return words;
}

std::string_view ProgramResult::reason() const noexcept {
  switch (over) {
    case Over::memory:
      return "memory";
    case Over::cpu:
      return "cpu";
    case Over::none:
      break;
  }
  return {};
}

std::string find_program(const std::string& name) {
  if (name.empty()) throw os_error(ENOENT, "exec (empty program name)");
  if (name.find('/') != std::string::npos) {
    if (executable_file(name)) return name;
    throw os_error(::access(name.c_str(), F_OK) == 0 ? EACCES : ENOENT, "exec " + name);
  }
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  bool exists = false;
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = end > start ? dirs.substr(start, end - start) : std::string(".");
    candidate += '/';
    candidate += name;
    if (executable_file(candidate)) return candidate;
    exists = exists || ::access(candidate.c_str(), F_OK) == 0;
    start = end + 1;
  }
  throw os_error(exists ? EACCES : ENOENT, "exec " + name);
}

Program::Program(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
                 const std::string& path) {
  const std::string name = name_of(argv);
  if (argv.empty() || name.empty()) throw os_error(ENOENT, "spawn (no program)");
  std::array<int, 2> in{};
  std::array<int, 2> out{};
  std::array<int, 2> err{};
  if (::pipe2(in.data(), O_CLOEXEC) != 0) throw os_error(errno, "pipe for " + name);
  // The program's end of its stdin stays open here too until run() ends: with a reader always
  // left, writing to the pipe can never raise SIGPIPE in this process, even when the program
  // exits without reading its input. (No process-wide SIGPIPE setting is needed or changed.)
  stdin_reader_ = Fd(in[0]);
  stdin_ = Fd(in[1]);
  if (::pipe2(out.data(), O_CLOEXEC) != 0) throw os_error(errno, "pipe for " + name);
  stdout_ = Fd(out[0]);
  Fd child_out(out[1]);
  if (::pipe2(err.data(), O_CLOEXEC) != 0) throw os_error(errno, "pipe for " + name);
  stderr_ = Fd(err[0]);
  Fd child_err(err[1]);
  set_nonblocking(stdin_.get(), name + " stdin");
  set_nonblocking(stdout_.get(), name + " stdout");
  set_nonblocking(stderr_.get(), name + " stderr");

  const std::vector<std::string> env = environment_with(extra_env);
  // A path found beforehand skips the search of PATH on every start.
  const std::vector<std::string> files = path.empty() ? exec_candidates(name) : std::vector{path};
  // One request to the spawner; false when it was lost unstarted (its socket ended without a
  // word: the spawner and its idle supervisors died as it went, killed by hand).
  const auto start = [&] {
    std::array<int, 2> control{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control.data()) != 0) {
      throw os_error(errno, "socketpair for " + name);
    }
    control_ = Fd(control[0]);
    Fd supervisor_end(control[1]);
    detail::spawn_supervised(detail::SpawnRequest{stdin_reader_.get(), child_out.get(),
                                                  child_err.get(), supervisor_end.get(), files,
                                                  argv, env});
    supervisor_end.reset();
    // The supervisor says whether the program started once its exec has succeeded or failed.
    // One is ready at once unless the spawner cannot fork: that is not waited for forever.
    pollfd said_fd{control_.get(), POLLIN, 0};
    if (poll_until(&said_fd, 1, Clock::now() + kMostStartWait) == 0) {
      control_.reset();  // a supervisor that takes the request later finds no one and ends
      throw os_error(EAGAIN, "spawn " + name + ": no process to start it within " +
                                 std::to_string(kMostStartWait.count()) + " s");
    }
    detail::Report said{};
    const ssize_t got =
        retry_eintr([&] { return ::recv(control_.get(), &said, sizeof said, MSG_WAITALL); });
    if (got == static_cast<ssize_t>(sizeof said) && said.kind == detail::Report::started) {
      pid_ = said.value;
      reaped_ = false;
      return true;
    }
    const int error = got < 0 ? errno : got == static_cast<ssize_t>(sizeof said) ? said.value : 0;
    reaped_ = false;
    reap();  // the supervisor, if it is still there, ends at the end of its socket
    if (error == 0) return false;
    throw os_error(error, "spawn " + name);
  };
  if (!start() && !start()) throw os_error(ECHILD, "spawn " + name + ": the spawner is gone");
}

Program::Program(Program&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      reaped_(std::exchange(other.reaped_, true)),
      cancelled_(std::move(other.cancelled_)),
      reaping_(std::move(other.reaping_)),
      control_(std::move(other.control_)),
      stdin_(std::move(other.stdin_)),
      stdin_reader_(std::move(other.stdin_reader_)),
      stdout_(std::move(other.stdout_)),
      stderr_(std::move(other.stderr_)) {}

Program::~Program() {
  if (!reaped_) reap();  // its end of file makes the supervisor kill the subtree and end
}

void Program::cancel() noexcept {
  if (!cancelled_) return;
  cancelled_->store(true);
  // The program's death is what wakes run(): the supervisor reports it.
  const std::lock_guard<std::mutex> lock(*reaping_);
  tell(SIGKILL);
}

void Program::terminate() noexcept {
  const std::lock_guard<std::mutex> lock(*reaping_);
  tell(SIGTERM);
}

void Program::tell(int signal) const noexcept {
  if (!control_) return;
  const char command = signal == SIGTERM ? detail::kTerm : detail::kKill;
  // Not sent when the supervisor is gone or (never in practice) its socket is full.
  (void)retry_eintr(
      [&] { return ::send(control_.get(), &command, 1, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

void Program::send_limits(const ProgramLimits& limits) const {
  const detail::RunLimits message{
      limits.memory,
      static_cast<std::uint64_t>(std::max<std::chrono::seconds::rep>(0, limits.cpu.count()))};
  if (message.memory == 0 && message.cpu_seconds == 0) return;
  const ssize_t sent = retry_eintr([&] {
    return ::send(control_.get(), &message, sizeof message, MSG_NOSIGNAL | MSG_DONTWAIT);
  });
  // A supervisor already gone (the program ended at once, or it was killed) is seen by run()
  // as the end of its socket; anything else would leave the program unlimited, which is no run.
  if (sent < 0 && errno != EPIPE && errno != ECONNRESET) {
    throw os_error(errno, "send limits to the supervisor of " + std::to_string(pid_));
  }
}

void Program::reap() noexcept {
  const std::lock_guard<std::mutex> lock(*reaping_);
  if (control_) {
    // Our end of file tells the supervisor to kill whatever is left and end; its own end of file
    // says it has, once the whole subtree is reaped. What it still reports is of no use now.
    (void)::shutdown(control_.get(), SHUT_WR);
    detail::Report unread{};
    while (retry_eintr([&] { return ::recv(control_.get(), &unread, sizeof unread, 0); }) > 0) {
    }
    control_.reset();
  }
  reaped_ = true;
}

// One call of run(): the state its loop keeps, and the loop's steps.
class Program::Run {
 public:
  Run(Program& program, std::string_view input, const ProgramLimits& limits,
      const std::function<void(std::string_view line)>& on_log_line)
      : program_(program),
        input_(input),
        limits_(limits),
        start_(Clock::now()),
        end_(end_after(limits.timeout, start_)),
        log_(limits.max_log, on_log_line) {}

  // As much of the input as the pipe takes now; stdin closed once it is all written, or once
  // the program takes no more.
  void feed();
  // Until the program has exited and its pipes are drained, or the grace after its exit passed.
  [[nodiscard]] bool going() const {
    return !exited_ || ((program_.stdout_ || program_.stderr_) && Clock::now() < drain_until_);
  }
  // One wait for the pipes, the exit or a limit, and what it found.
  void step();
  // Closes the pipes, reaps the program and says how it ended.
  ProgramResult finish();

 private:
  [[nodiscard]] Clock::time_point wake_at() const;
  void drain_output();
  void drain_errors();
  void see_exit();
  void enforce_limits();
  void stop(ProgramResult::End why, int signal);

  Program& program_;
  std::string_view input_;
  const ProgramLimits& limits_;
  Clock::time_point start_;
  Clock::time_point end_;
  Clock::time_point kill_at_ = Clock::time_point::max();
  Clock::time_point drain_until_ = Clock::time_point::max();
  bool exited_ = false;
  bool killed_ = false;    // by a limit: its result is set already
  bool reported_ = false;  // status_ is the program's wait status, as its supervisor reported it
  int status_ = 0;
  std::size_t written_ = 0;
  LogLines log_;
  ProgramResult result_;
};

void Program::Run::feed() {
  Fd& in = program_.stdin_;
  while (in && written_ < input_.size()) {
    const std::size_t n = std::min(kChunk, input_.size() - written_);
    const ssize_t sent =
        retry_eintr([&] { return ::write(in.get(), input_.data() + written_, n); });
    if (sent < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) in.reset();  // nothing more to give
      return;
    }
    written_ += static_cast<std::size_t>(sent);
  }
  in.reset();  // EOF for the program
}

void Program::Run::step() {
  std::array<pollfd, 4> fds{};  // stdin, stdout, stderr, the supervisor
  std::size_t count = 0;
  const auto watch = [&](const Fd& fd, short events) -> const pollfd* {
    if (!fd) return nullptr;
    fds[count] = pollfd{fd.get(), events, 0};
    return &fds[count++];
  };
  const pollfd* in = watch(program_.stdin_, POLLOUT);
  const pollfd* out = watch(program_.stdout_, POLLIN);
  const pollfd* err = watch(program_.stderr_, POLLIN);
  const pollfd* said = exited_ ? nullptr : watch(program_.control_, POLLIN);
  if (poll_until(fds.data(), count, wake_at()) < 0) {
    throw os_error(errno, "poll " + std::to_string(program_.pid_));
  }
  if (in != nullptr && in->revents != 0) feed();
  if (out != nullptr && out->revents != 0) drain_output();
  if (err != nullptr && err->revents != 0) drain_errors();
  if (said != nullptr && said->revents != 0) see_exit();
  enforce_limits();
}

Clock::time_point Program::Run::wake_at() const { return std::min({end_, kill_at_, drain_until_}); }

void Program::Run::drain_output() {
  (void)drain(program_.stdout_, [&](std::string_view bytes) {
    if (killed_ && result_.end == ProgramResult::End::too_large) return;
    std::string_view kept = bytes;
    const bool over =
        limits_.max_output != 0 && result_.output.size() + bytes.size() > limits_.max_output;
    if (over) kept = bytes.substr(0, limits_.max_output - result_.output.size());
    if (!kept.empty() && limits_.charge_output && !limits_.charge_output(kept.size())) {
      stop(ProgramResult::End::too_large, SIGKILL);  // no memory left to keep it in
      return;
    }
    result_.output.append(kept);
    if (over) stop(ProgramResult::End::too_large, SIGKILL);
  });
}

void Program::Run::drain_errors() {
  const auto take = [&](std::string_view bytes) {
    result_.error_bytes += bytes.size();
    log_.add(bytes);
  };
  if (!drain(program_.stderr_, take)) log_.finish();
}

// The supervisor's report that the program ended, sent once the program's whole subtree is
// killed and reaped, or the end of its socket (it is gone without a word).
void Program::Run::see_exit() {
  detail::Report said{};
  ssize_t got = -1;
  for (int attempt = 0; attempt < 2; ++attempt) {
    got = retry_eintr(
        [&] { return ::recv(program_.control_.get(), &said, sizeof said, MSG_DONTWAIT); });
    // A command it never read makes its exit a reset, said once, before its report.
    if (got >= 0 || errno != ECONNRESET) break;
  }
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (got == static_cast<ssize_t>(sizeof said) && said.kind == detail::Report::over) {
    // The limit the subtree was killed for; its end comes next.
    result_.over =
        said.value == detail::over_memory ? ProgramResult::Over::memory : ProgramResult::Over::cpu;
    return;
  }
  if (got == static_cast<ssize_t>(sizeof said) && said.kind == detail::Report::ended) {
    status_ = said.value;
    reported_ = true;
    // Sent once the subtree is killed and reaped: the supervisor's own end is not waited for.
    const std::lock_guard<std::mutex> lock(*program_.reaping_);
    program_.control_.reset();
    program_.reaped_ = true;
  }
  exited_ = true;
  // Nothing it started is left to hold the pipes open; the grace only bounds the draining.
  drain_until_ = Clock::now() + limits_.grace;
}

// cancel(), and the runtime limit's escalation: SIGTERM at the end, SIGKILL a grace later.
void Program::Run::enforce_limits() {
  if (exited_) return;
  if (program_.cancelled_->load() && !killed_) {
    killed_ = true;  // ends as what SIGKILL makes of it: signaled
    program_.tell(SIGKILL);
  }
  const Clock::time_point now = Clock::now();
  if (now >= end_ && !killed_) {
    stop(ProgramResult::End::timed_out, SIGTERM);
    kill_at_ = now + limits_.grace;
  } else if (now >= kill_at_) {
    program_.tell(SIGKILL);
    kill_at_ = Clock::time_point::max();
  }
}

void Program::Run::stop(ProgramResult::End why, int signal) {
  if (!killed_) result_.end = why;
  killed_ = true;
  program_.tell(signal);
}

ProgramResult Program::Run::finish() {
  log_.finish();
  program_.stdout_.reset();
  program_.stderr_.reset();
  program_.stdin_.reset();
  program_.stdin_reader_.reset();

  program_.reap();  // the supervisor, which ends once the subtree is gone
  result_.duration = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start_);
  result_.log_dropped = log_.dropped();
  if (killed_ && !program_.cancelled_->load()) return std::move(result_);
  if (!reported_) {  // the supervisor ended without a word (killed by someone): no status
    result_.end = ProgramResult::End::exited;
    result_.code = -1;
  } else if (WIFSIGNALED(status_)) {
    result_.end = ProgramResult::End::signaled;
    result_.code = WTERMSIG(status_);
  } else {
    result_.end = ProgramResult::End::exited;
    result_.code = WEXITSTATUS(status_);
  }
  return std::move(result_);
}

void prepare_programs() { detail::start_spawner(); }

ProgramResult Program::run(std::string_view input, const ProgramLimits& limits,
                           const std::function<void(std::string_view line)>& on_log_line) {
  if (reaped_) throw std::logic_error("Program::run called twice");
  send_limits(limits);
  Run run(*this, input, limits, on_log_line);
  // As much of the input as the pipe takes, written now: a small request is in the pipe, and
  // its end seen, before the program has even finished starting, which saves a wake-up.
  run.feed();
  while (run.going()) run.step();
  return run.finish();
}

}  // namespace sockecho
