#include "supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include "sockecho/error.hpp"
#include "sockecho/fd.hpp"

namespace sockecho::detail {

namespace {

// Code that runs in the spawner and the supervisors, forked from a process that may have other
// threads: only async-signal-safe calls (no allocation, no lock, no stdio, no exception).

// Everything the supervisor needs, made before the fork: after it, in a child of a process with
// other threads, only async-signal-safe calls are made (no allocation, no lock, no stdio).
struct SupervisorSetup {
  int in = -1;  // the program's 0-2
  int out = -1;
  int err = -1;
  int control = -1;                    // the supervisor's end of the socket
  const char* const* files = nullptr;  // the files to try to exec, in order, null-terminated
  char* const* argv = nullptr;
  char* const* envp = nullptr;
};

// A supervisor's descriptors. During a run: the program's 0-2 as its own 0-2 and the run's
// socket as 3. For its whole life (close-on-exec): the pool it takes requests from, the pipe on
// which it tells the spawner it took one or is back, and the signalfd of its children's ends.
constexpr int kControlFd = 3;
constexpr int kPoolFd = 5;
constexpr int kTakenFd = 6;
constexpr int kExitsFd = 7;

// Decimal digits of `n` appended at `at`, which has room; returns the new end.
char* append_number(char* at, long n) {
  std::array<char, 24> digits{};
  int count = 0;
  do {
    digits.at(count++) = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n > 0);
  while (count > 0) *at++ = digits.at(--count);
  return at;
}

char* append_text(char* at, const char* text) {
  while (*text != '\0') *at++ = *text++;
  return at;
}

int open_retrying(const char* path, int flags) {
  int fd = -1;
  do {
    fd = ::open(path, flags | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// The children of every thread of `pid`, from /proc/PID/task/TID/children, pushed on `stack`
// (those past `capacity` are left for a later pass: once their parent is killed they are ours).
void push_children(pid_t pid, pid_t* stack, std::size_t& size, std::size_t capacity) {
  std::array<char, 64> path{};
  *append_number(append_text(path.data(), "/proc/"), pid) = '\0';
  char* const task_end = append_text(path.data() + std::strlen(path.data()), "/task/");
  *task_end = '\0';
  const int tasks = open_retrying(path.data(), O_RDONLY | O_DIRECTORY);
  if (tasks < 0) return;
  alignas(8) std::array<char, 1024> entries{};
  for (;;) {
    const long got = ::syscall(SYS_getdents64, tasks, entries.data(), entries.size());
    if (got <= 0) break;
    for (long at = 0; at < got;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
      unsigned short length = 0;
      std::memcpy(&length, entries.data() + at + 16, sizeof length);
      const char* name = entries.data() + at + 19;
      at += length;
      if (name[0] < '0' || name[0] > '9') continue;
      *append_text(append_text(task_end, name), "/children") = '\0';
      const int children = open_retrying(path.data(), O_RDONLY);
      if (children < 0) continue;
      std::array<char, 512> text{};
      long child = 0;
      for (;;) {
        const ssize_t n = ::read(children, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) {
          const char c = text.at(static_cast<std::size_t>(i));
          if (c >= '0' && c <= '9') {
            child = child * 10 + (c - '0');
          } else if (child > 0) {
            if (size < capacity) stack[size++] = static_cast<pid_t>(child);
            child = 0;
          }
        }
      }
      if (child > 0 && size < capacity) stack[size++] = static_cast<pid_t>(child);
      (void)::close(children);
    }
  }
  (void)::close(tasks);
}

// Sends `signal` to every descendant of this process that /proc shows now, parents first.
void signal_subtree(int signal) {
  constexpr std::size_t kCapacity = 1024;
  std::array<pid_t, kCapacity> stack{};
  std::size_t size = 0;
  push_children(::getpid(), stack.data(), size, kCapacity);
  while (size > 0) {
    const pid_t pid = stack[--size];
    (void)::kill(pid, signal);
    push_children(pid, stack.data(), size, kCapacity);
  }
}

// What a run's subtree uses of the host: resident bytes and CPU microseconds.
struct Usage {
  std::uint64_t memory = 0;
  std::uint64_t cpu_us = 0;
};

// Sizes the supervisor measures in, read once before any run (from the auxiliary vector: no
// allocation, no lock).
struct Units {
  std::uint64_t page = 4096;
  std::uint64_t ticks = 100;  // clock ticks a second, the unit of /proc/PID/stat's times
};

std::uint64_t microseconds(const timeval& t) {
  return static_cast<std::uint64_t>(t.tv_sec) * 1000000U + static_cast<std::uint64_t>(t.tv_usec);
}

std::int64_t now_ms() {
  timespec now{};
  (void)::clock_gettime(CLOCK_MONOTONIC, &now);  // cannot fail with this clock
  return std::int64_t{now.tv_sec} * 1000 + now.tv_nsec / 1000000;
}

// CPU of the children this supervisor has reaped, and all they reaped in turn: what left the
// subtree and is no longer in any live process's /proc/PID/stat.
std::uint64_t reaped_cpu_us() {
  rusage children{};
  if (::getrusage(RUSAGE_CHILDREN, &children) != 0) return 0;  // EINVAL only: never
  return microseconds(children.ru_utime) + microseconds(children.ru_stime);
}

// Adds what /proc/PID/stat says of one live process: its resident memory (field 24, the count
// statm's second field shows too: one file read, not two) and its CPU, its own (utime, stime:
// all its threads, the ended ones too) and that of the children it has waited for (cutime,
// cstime). A process gone since it was listed adds nothing.
void add_process(pid_t pid, const Units& units, Usage& usage) {
  std::array<char, 64> path{};
  *append_text(append_number(append_text(path.data(), "/proc/"), pid), "/stat") = '\0';
  const int fd = open_retrying(path.data(), O_RDONLY);
  if (fd < 0) return;
  std::array<char, 1024> text{};
  ssize_t got = -1;
  do {
    got = ::read(fd, text.data(), text.size() - 1);
  } while (got < 0 && errno == EINTR);
  (void)::close(fd);
  if (got <= 0) return;
  // The name, field 2, is in parentheses and may hold spaces and ')': the fields counted here
  // start after its last ')', with the state (field 3) as number 0.
  const char* at = nullptr;
  for (ssize_t i = 0; i < got; ++i) {
    if (text.at(static_cast<std::size_t>(i)) == ')') at = text.data() + i + 1;
  }
  if (at == nullptr) return;
  const char* const end = text.data() + got;
  constexpr int kUtime = 11;  // fields 14-17: utime, stime, cutime, cstime
  constexpr int kCstime = 14;
  constexpr int kRss = 21;  // field 24, in pages
  std::uint64_t ticks = 0;
  for (int field = -1; at < end && field < kRss;) {
    while (at < end && *at == ' ') ++at;
    ++field;
    std::uint64_t value = 0;
    const bool negative = at < end && *at == '-';  // the children's times are signed: never so
    for (; at < end && *at != ' ' && *at != '\n'; ++at) {
      if (*at >= '0' && *at <= '9') value = value * 10 + static_cast<std::uint64_t>(*at - '0');
    }
    if (negative) value = 0;
    if (field >= kUtime && field <= kCstime) ticks += value;
    if (field == kRss) usage.memory += value * units.page;
  }
  usage.cpu_us += ticks * 1000000U / units.ticks;
}

// What the supervisor's subtree uses now, `reaped_before` (reaped_cpu_us() at the run's start:
// earlier runs of this supervisor) taken off. Each process is read before its children, so a
// child reaped between the two reads is missed for this once, never counted twice; the children
// this supervisor reaped are read here, when it reaps nothing.
Usage measure_subtree(const Units& units, std::uint64_t reaped_before) {
  constexpr std::size_t kCapacity = 1024;  // more live processes than this: the rest are missed
  std::array<pid_t, kCapacity> stack{};
  std::size_t size = 0;
  Usage usage;
  const std::uint64_t reaped = reaped_cpu_us();
  usage.cpu_us = reaped > reaped_before ? reaped - reaped_before : 0;
  push_children(::getpid(), stack.data(), size, kCapacity);
  while (size > 0) {
    const pid_t pid = stack[--size];
    add_process(pid, units, usage);
    push_children(pid, stack.data(), size, kCapacity);
  }
  return usage;
}

// The limit `usage` is over, or 0.
int over_limit(const RunLimits& limits, const Usage& usage) {
  if (limits.memory != 0 && usage.memory > limits.memory) return over_memory;
  if (limits.cpu_seconds != 0 && usage.cpu_us >= limits.cpu_seconds * 1000000U) return over_cpu;
  return 0;
}

// Kills every descendant and reaps them until none is left: being a subreaper, whatever they
// started comes back to us when its parent dies, so no child left means no descendant left.
// The program's status is kept when it is among them.
void kill_and_reap_all(pid_t program, int& status, bool& ended) {
  bool killed = false;  // since the last reaping
  for (;;) {
    int got_status = 0;
    // What has ended is reaped first: with no child left (the usual end, a program that started
    // nothing that outlived it), /proc is never read.
    const pid_t got = ::waitpid(-1, &got_status, __WALL | (killed ? 0 : WNOHANG));
    if (got < 0) {
      if (errno == EINTR) continue;
      return;  // ECHILD: nothing left
    }
    if (got == 0) {  // children left, still running: every descendant is killed
      signal_subtree(SIGKILL);
      killed = true;
      continue;
    }
    killed = false;
    if (got == program && !ended) {
      status = got_status;
      ended = true;
    }
  }
}

void report(int fd, int kind, int value) {
  const Report message{kind, value};
  ssize_t sent = -1;
  do {
    sent = ::send(fd, &message, sizeof message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
}

// In the vfork child: the program's own process group, nothing blocked, and its exec; on
// failure the errno goes to the supervisor on `errors` (close-on-exec, so a successful exec
// closes it: a pipe, not the memory vfork shares, since a sanitizer may make vfork a fork).
[[noreturn]] void start_program(const SupervisorSetup& setup, int errors) {
  (void)::setpgid(0, 0);
  // Every signal is at its default here already (set once in the spawner, SIGCHLD in the
  // supervisor): only the mask is left to clear.
  sigset_t none;
  sigemptyset(&none);
  (void)::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  int error = ENOENT;
  bool denied = false;
  for (const char* const* file = setup.files; *file != nullptr; ++file) {
    ::execve(*file, setup.argv, setup.envp);
    error = errno;
    if (error == EACCES) denied = true;
    // Like a search of PATH: a directory that lacks it or cannot be searched is skipped.
    if (error != ENOENT && error != ENOTDIR && error != EACCES && error != ESTALE) break;
  }
  if (error == ENOENT && denied) error = EACCES;
  ssize_t told = -1;
  do {
    told = ::write(errors, &error, sizeof error);
  } while (told < 0 && errno == EINTR);
  ::_exit(127);
}

// What the program's exec said on `errors`: 0 once it succeeded (the pipe closed unwritten), or
// its errno.
int exec_result(int errors) {
  int error = 0;
  ssize_t got = -1;
  do {
    got = ::read(errors, &error, sizeof error);
  } while (got < 0 && errno == EINTR);
  return got == static_cast<ssize_t>(sizeof error) ? error : 0;
}

// The run's descriptors as 0-3, every other one of the run closed (the long-lived ones stay).
bool arrange_descriptors(const SupervisorSetup& setup) {
  const std::array<int, kControlFd + 1> fds{setup.in, setup.out, setup.err, setup.control};
  // As they usually arrive (0-3 are free between runs, taken in order): nothing to move.
  if (fds == std::array<int, kControlFd + 1>{0, 1, 2, kControlFd}) {
    return ::fcntl(kControlFd, F_SETFD, FD_CLOEXEC) == 0;
  }
  std::array<int, kControlFd + 1> moved{-1, -1, -1, -1};
  bool ok = true;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    moved.at(i) = ::fcntl(fds.at(i), F_DUPFD_CLOEXEC, kExitsFd + 1);  // above all that is kept
    ok = ok && moved.at(i) >= 0;
  }
  for (const int fd : fds) (void)::close(fd);
  for (std::size_t i = 0; ok && i < moved.size(); ++i) {
    const int target = static_cast<int>(i);
    ok = ::dup2(moved.at(i), target) == target;  // 0-2 lose close-on-exec: the program's
  }
  for (const int fd : moved) {
    if (fd >= 0) (void)::close(fd);
  }
  return ok && ::fcntl(kControlFd, F_SETFD, FD_CLOEXEC) == 0;
}

// One run: starts the program, passes on what it is told, and kills the whole subtree when the
// program exits, when told to, or when the server's end of the socket closes (the server
// exited or was killed, even by SIGKILL); reports, and closes the run's descriptors. With no
// child left at its end, the supervisor is as clean as before it.
void supervise(const SupervisorSetup& setup, const Units& units) {
  if (!arrange_descriptors(setup)) {  // the server sees the socket close
    (void)::close_range(0, kControlFd, 0);
    return;
  }
  std::array<int, 2> errors{-1, -1};
  if (::pipe2(errors.data(), O_CLOEXEC) != 0) {
    report(kControlFd, Report::failed, errno);
    (void)::close_range(0, kControlFd, 0);
    return;
  }
  const pid_t program = ::vfork();
  if (program == 0) start_program(setup, errors[1]);
  const int fork_error = errno;
  (void)::close(errors[1]);
  const int exec_error = program < 0 ? fork_error : exec_result(errors[0]);
  (void)::close(errors[0]);
  int status = 0;
  bool ended = false;
  if (exec_error != 0) {
    const int error = exec_error;
    kill_and_reap_all(program, status, ended);
    report(kControlFd, Report::failed, error);
    (void)::close_range(0, kControlFd, 0);
    return;
  }
  report(kControlFd, Report::started, program);
  // The program's ends of its pipes are the program's alone now.
  (void)::close_range(0, STDERR_FILENO, 0);

  // With a limit, the subtree is measured every kLimitPeriodMs; -1: never.
  RunLimits limits{};
  std::int64_t measure_at = -1;
  int over = 0;  // the limit the subtree went over, once it did
  const std::uint64_t reaped_before = reaped_cpu_us();
  while (!ended) {
    std::array<pollfd, 2> fds{pollfd{kControlFd, POLLIN, 0}, pollfd{kExitsFd, POLLIN, 0}};
    const int wait = measure_at < 0
                         ? -1
                         : static_cast<int>(std::max<std::int64_t>(
                               0, std::min<std::int64_t>(measure_at - now_ms(), kLimitPeriodMs)));
    if (::poll(fds.data(), fds.size(), wait) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) {
      signalfd_siginfo info{};
      while (::read(kExitsFd, &info, sizeof info) > 0) {
      }
      for (;;) {
        int got_status = 0;
        const pid_t got = ::waitpid(-1, &got_status, WNOHANG | __WALL);
        if (got <= 0) break;
        if (got == program) {
          status = got_status;
          ended = true;
        }
      }
    }
    if (ended) continue;
    if (measure_at >= 0 && now_ms() >= measure_at) {
      over = over_limit(limits, measure_subtree(units, reaped_before));
      if (over != 0) signal_subtree(SIGKILL);  // its end comes through the signalfd
      measure_at = over != 0 ? -1 : now_ms() + kLimitPeriodMs;
    }
    if (fds[0].revents == 0) continue;
    std::array<char, sizeof(RunLimits)> command{};
    const ssize_t n = ::recv(kControlFd, command.data(), command.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;  // the server is gone, or is done with this run
    if (n == static_cast<ssize_t>(sizeof limits)) {
      std::memcpy(&limits, command.data(), sizeof limits);
      const bool any = limits.memory != 0 || limits.cpu_seconds != 0;
      measure_at = any && over == 0 ? now_ms() + kLimitPeriodMs : -1;
      continue;
    }
    signal_subtree(command[0] == kTerm ? SIGTERM : SIGKILL);
  }
  kill_and_reap_all(program, status, ended);
  // Commands left unread would make the server's next read a reset; one sent after this is
  // told apart there.
  char unread = 0;
  while (::recv(kControlFd, &unread, 1, MSG_DONTWAIT) > 0) {
  }
  if (ended && over != 0) report(kControlFd, Report::over, over);
  if (ended) report(kControlFd, Report::ended, status);
  (void)::close(kControlFd);
}

// A spawn request is one message on the spawner's socket (SOCK_SEQPACKET, so one idle
// supervisor takes it whole): this header, then `bytes` bytes of strings each ended by a NUL
// (the files to try, the arguments, the environment), with the program's 0-2 and the
// supervisor's end of its socket passed along (SCM_RIGHTS).
struct Header {
  std::uint32_t files = 0;
  std::uint32_t args = 0;
  std::uint32_t envs = 0;
  std::uint32_t reserved = 0;
  std::uint64_t bytes = 0;
};
constexpr int kPassed = 4;  // descriptors per request: 0-2 and the socket
// Memory for one request: the strings in the first half, the tables pointing at them in the
// second. A request is one datagram, which the kernel caps near twice net.core.wmem_max (416 KiB
// by default); a larger one fails at the send with EMSGSIZE.
constexpr std::size_t kRequestMemory = std::size_t{4} << 20;
constexpr std::size_t kMostStrings = kRequestMemory / 2;
// An idle supervisor ends after this long without a request; the spawner keeps one at least.
constexpr int kIdleSeconds = 10;
// Idle supervisors the spawner keeps track of; any more end idle in time, untracked.
constexpr int kTracked = 64;

// Supervisors (idle or running) the spawner keeps track of at once; it forks no more beyond.
constexpr std::size_t kMostSupervisors = std::size_t{1} << 16;

// What a supervisor tells the spawner on its pipe (one write each, atomic).
struct Change {
  enum Kind : int { taken = 1, back = 2 };
  pid_t pid = 0;
  int kind = 0;
};

void tell_spawner(pid_t self, int kind) {
  const Change change{self, kind};
  ssize_t told = -1;
  do {
    told = ::write(kTakenFd, &change, sizeof change);
  } while (told < 0 && errno == EINTR);
}

// Points `table` at `count` strings from `at` on (each ended by a NUL, within `end`), null-
// terminated; returns where the next string starts, or nullptr when they do not fit.
char* point_at(char* at, const char* end, std::uint32_t count, char** table) {
  for (std::uint32_t i = 0; i < count; ++i) {
    table[i] = at;
    while (at < end && *at != '\0') ++at;
    if (at == end) return nullptr;
    ++at;
  }
  table[count] = nullptr;
  return at;
}

// Takes one request from the pool and supervises its run. False when the supervisor should end:
// the pool ended (the server is gone) or it waited kIdleSeconds for nothing.
bool take_one(void* memory, pid_t self, const Units& units) {
  Header header{};
  char* const strings = static_cast<char*>(memory);
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kPassed)> control{};
  std::array<iovec, 2> parts{iovec{&header, sizeof header}, iovec{strings, kMostStrings}};
  msghdr message{};
  message.msg_iov = parts.data();
  message.msg_iovlen = parts.size();
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  ssize_t got = -1;
  do {
    got = ::recvmsg(kPoolFd, &message, 0);  // 0-2 are to be inherited; 3 is made close-on-exec
  } while (got < 0 && errno == EINTR);
  if (got <= 0) return false;  // the end of the pool, or the idle time is up (EAGAIN)
  // Taken: no longer one of the spawner's idle ones, nor to die with it.
  (void)::prctl(PR_SET_PDEATHSIG, 0);
  tell_spawner(self, Change::taken);

  const cmsghdr* passed = CMSG_FIRSTHDR(&message);
  if (passed == nullptr || passed->cmsg_level != SOL_SOCKET || passed->cmsg_type != SCM_RIGHTS ||
      passed->cmsg_len != CMSG_LEN(sizeof(int) * kPassed)) {
    return true;  // not one of ours: nothing to answer on
  }
  std::array<int, kPassed> fds{-1, -1, -1, -1};
  std::memcpy(fds.data(), CMSG_DATA(passed), sizeof(int) * kPassed);
  const char* const end = strings + header.bytes;
  auto** const files = reinterpret_cast<char**>(strings + kMostStrings);
  const std::size_t pointers = std::size_t{header.files} + header.args + header.envs + 3;
  const bool whole = (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 &&
                     static_cast<std::size_t>(got) == sizeof header + header.bytes &&
                     header.files > 0 && pointers * sizeof(char*) <= kRequestMemory - kMostStrings;
  char** const argv = files + header.files + 1;
  char** const envp = argv + header.args + 1;
  char* at = whole ? point_at(strings, end, header.files, files) : nullptr;
  at = at != nullptr ? point_at(at, end, header.args, argv) : nullptr;
  at = at != nullptr ? point_at(at, end, header.envs, envp) : nullptr;
  if (at != end) {
    report(fds[3], Report::failed, E2BIG);
    for (const int fd : fds) (void)::close(fd);
    return true;
  }
  supervise(SupervisorSetup{fds[0], fds[1], fds[2], fds[3], files, argv, envp}, units);
  return true;
}

// The kernel's out-of-memory killer takes the processes with the highest score first: at 1000,
// which every program inherits from its supervisor, a run is taken before the server (any other
// score) whatever their sizes. Raising one's own score takes no privilege; a program may lower
// its own again only as far as a privileged ancestor allowed (oom_score_adj_min). The supervisor's
// own score is 1000 too and that is harmless: among processes of equal score the killer takes
// the largest, which a supervisor (a few pages) never is; and were one taken, its run's subtree
// comes back to the spawner, which kills it, and the run ends with no status (exit=-1). Where
// /proc cannot be written (a sandbox without it) the programs keep the server's score, and the
// start goes on: nothing else of a run depends on it.
void raise_oom_score() {
  const int fd = open_retrying("/proc/self/oom_score_adj", O_WRONLY);
  if (fd < 0) return;
  constexpr std::array<char, 4> kHighest{'1', '0', '0', '0'};
  ssize_t written = -1;
  do {
    written = ::write(fd, kHighest.data(), kHighest.size());
  } while (written < 0 && errno == EINTR);
  (void)::close(fd);
}

// A supervisor: made ready once (its own process group, a child subreaper, a signalfd for its
// children, memory for a request), it takes requests from the pool one at a time, supervising
// each run, and tells the spawner when it is taken and when it is back. While idle it dies with
// the spawner; it ends when the pool ends, after kIdleSeconds idle, or when its spawner is gone.
[[noreturn]] void supervisor_main(int pool, int taken, pid_t spawner) {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  (void)::sigaction(SIGCHLD, &default_action, nullptr);  // ends seen by the signalfd
  (void)::setpgid(0, 0);  // no terminal's signal to the server's group reaches it
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  const int exits = ::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC);
  void* const memory =
      // cppcheck-suppress invalidFunctionArg ; MAP_ANONYMOUS takes no descriptor: -1 by convention
      ::mmap(nullptr, kRequestMemory, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (exits < 0 || memory == MAP_FAILED || ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) ::_exit(1);
  // The three kept at their numbers (through numbers above them, so no move overwrites another),
  // and nothing else open.
  const std::array<int, 3> kept{::fcntl(pool, F_DUPFD_CLOEXEC, kExitsFd + 1),
                                ::fcntl(taken, F_DUPFD_CLOEXEC, kExitsFd + 1),
                                ::fcntl(exits, F_DUPFD_CLOEXEC, kExitsFd + 1)};
  for (std::size_t i = 0; i < kept.size(); ++i) {
    const int target = kPoolFd + static_cast<int>(i);
    if (kept.at(i) < 0 || ::dup3(kept.at(i), target, O_CLOEXEC) != target) ::_exit(1);
  }
  (void)::close_range(0, kPoolFd - 1, 0);
  (void)::close_range(kExitsFd + 1, ~0U, 0);
  raise_oom_score();
  // Both from the auxiliary vector glibc keeps: nothing allocated, nothing locked.
  Units units;
  if (const long page = ::sysconf(_SC_PAGESIZE); page > 0)
    units.page = static_cast<std::uint64_t>(page);
  if (const long ticks = ::sysconf(_SC_CLK_TCK); ticks > 0)
    units.ticks = static_cast<std::uint64_t>(ticks);
  const pid_t self = ::getpid();
  for (;;) {
    // Idle: dies with the spawner (and ends if it is gone already).
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != spawner) ::_exit(0);
    if (!take_one(memory, self, units)) ::_exit(0);
    tell_spawner(self, Change::back);
  }
}

// Takes note of the supervisors' changes: a taken one leaves the idle ones, a returning one
// joins them (while there is room to track it).
void note_changes(int changes, std::array<pid_t, kTracked>& idle) {
  Change change{};
  while (::read(changes, &change, sizeof change) == static_cast<ssize_t>(sizeof change)) {
    for (pid_t& slot : idle) {
      if (change.kind == Change::taken && slot == change.pid) {
        slot = 0;
        break;
      }
      if (change.kind == Change::back && slot == 0) {
        slot = change.pid;
        break;
      }
    }
  }
}

// Every supervisor the spawner forked and has not reaped yet, in memory of its own.
class Supervisors {
 public:
  bool ready() const { return pids_ != nullptr; }
  void map() {
    constexpr std::size_t kBytes = kMostSupervisors * sizeof(pid_t);
    constexpr int kPrivate = MAP_PRIVATE | MAP_ANONYMOUS;
    // cppcheck-suppress invalidFunctionArg ; MAP_ANONYMOUS takes no descriptor: -1 by convention
    void* memory = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, kPrivate, -1, 0);
    pids_ = memory == MAP_FAILED ? nullptr : static_cast<pid_t*>(memory);
  }
  bool full() const { return count_ == kMostSupervisors; }
  void add(pid_t pid) { pids_[count_++] = pid; }
  // Whether `pid` was one (and is forgotten now).
  bool remove(pid_t pid) {
    for (std::size_t i = 0; i < count_; ++i) {
      if (pids_[i] == pid) {
        pids_[i] = pids_[--count_];
        return true;
      }
    }
    return false;
  }
  bool contains(pid_t pid) const {
    for (std::size_t i = 0; i < count_; ++i) {
      if (pids_[i] == pid) return true;
    }
    return false;
  }

 private:
  pid_t* pids_ = nullptr;
  std::size_t count_ = 0;
};

// The spawner is a child subreaper too: when a program kills its own supervisor (the same user
// may), the program and all it started come back here. Every child of the spawner that is not a
// supervisor is such an escapee, and is killed with all it started.
void kill_escaped(const Supervisors& supervisors) {
  constexpr std::size_t kCapacity = 1024;
  std::array<pid_t, kCapacity> stack{};
  std::size_t size = 0;
  push_children(::getpid(), stack.data(), size, kCapacity);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < size; ++i) {
    if (!supervisors.contains(stack[i])) stack[kept++] = stack[i];
  }
  size = kept;
  while (size > 0) {
    const pid_t pid = stack[--size];
    (void)::kill(pid, SIGKILL);
    push_children(pid, stack.data(), size, kCapacity);
  }
}

// The spawner: keeps at least one idle supervisor waiting on `pool`, forking one whenever none is
// left, until the server's end of the pool closes. Running supervisors outlive it: each ends
// with its run's socket, then with the pool.
[[noreturn]] void spawner_main(int pool) {
  sigset_t all;
  sigfillset(&all);
  (void)::pthread_sigmask(SIG_SETMASK, &all, nullptr);  // a terminal's Ctrl-C is for the server
  // Every signal at its default, once, for every program started from here (posix_spawn's
  // POSIX_SPAWN_SETSIGDEF): the server's handlers and ignored signals are its own.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int signal = 1; signal < NSIG; ++signal) {
    if (signal != SIGKILL && signal != SIGSTOP) (void)::sigaction(signal, &default_action, nullptr);
  }
  // Nothing of the server's but this socket: no listener or connection kept open here.
  if (pool > 0) (void)::close_range(0, static_cast<unsigned>(pool) - 1, 0);
  (void)::close_range(static_cast<unsigned>(pool) + 1, ~0U, 0);
  (void)::prctl(PR_SET_NAME, "sockecho-spawn", 0, 0, 0);
  std::array<int, 2> changes{-1, -1};
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  const int exits = ::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC);
  // An idle supervisor waits this long in its receive at most.
  const timeval idle_time{kIdleSeconds, 0};
  Supervisors supervisors;
  supervisors.map();
  if (exits < 0 || !supervisors.ready() || ::pipe2(changes.data(), O_CLOEXEC | O_NONBLOCK) != 0 ||
      ::setsockopt(pool, SOL_SOCKET, SO_RCVTIMEO, &idle_time, sizeof idle_time) != 0 ||
      ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    ::_exit(1);
  }
  const pid_t self = ::getpid();
  std::array<pid_t, kTracked> idle{};
  for (;;) {
    bool none_idle = true;
    for (const pid_t slot : idle) none_idle = none_idle && slot <= 0;
    if (none_idle && !supervisors.full()) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        (void)::prctl(PR_SET_NAME, "sockecho-run", 0, 0, 0);
        supervisor_main(pool, changes[1], self);
      }
      idle[0] = pid;  // a failed fork (-1) is tried again at the next wake-up
      if (pid > 0) supervisors.add(pid);
    }
    // The pool's end: POLLHUP once the server's end is closed (never POLLIN: that is theirs).
    std::array<pollfd, 3> fds{pollfd{pool, POLLRDHUP, 0}, pollfd{changes[0], POLLIN, 0},
                              pollfd{exits, POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), idle[0] < 0 ? 50 : -1) < 0 && errno != EINTR) ::_exit(1);
    if ((fds[0].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) ::_exit(0);
    note_changes(changes[0], idle);
    signalfd_siginfo info{};
    while (::read(exits, &info, sizeof info) > 0) {
    }
    bool escaped = false;
    for (;;) {  // supervisors that ended (idle, or killed), and escapees
      int status = 0;
      const pid_t ended = ::waitpid(-1, &status, WNOHANG | __WALL);
      if (ended <= 0) break;
      for (pid_t& slot : idle) {
        if (slot == ended) slot = 0;
      }
      const bool supervisor = supervisors.remove(ended);
      escaped = escaped || !supervisor || WIFSIGNALED(status);
    }
    if (escaped) kill_escaped(supervisors);
  }
}

}  // namespace

// The server's side: the spawner's socket and its process, started on first use.
class Spawner {
 public:
  void start() {
    const std::lock_guard<std::mutex> lock(mutex_);
    ensure_started();
  }

  void spawn(const SpawnRequest& request) {
    std::string strings;
    for (const auto* list : {&request.files, &request.argv, &request.env}) {
      for (const std::string& s : *list) {
        strings += s;
        strings += '\0';
      }
    }
    const std::string name = request.argv.empty() ? "" : request.argv[0];
    if (strings.size() > kMostStrings) {
      throw os_error(E2BIG, "spawn " + name);
    }
    const Header header{static_cast<std::uint32_t>(request.files.size()),
                        static_cast<std::uint32_t>(request.argv.size()),
                        static_cast<std::uint32_t>(request.env.size()), 0, strings.size()};
    const std::array<int, kPassed> fds{request.in, request.out, request.err, request.control};
    const std::lock_guard<std::mutex> lock(mutex_);
    for (int attempt = 0;; ++attempt) {
      ensure_started();
      const int error = send_request(header, fds, strings);
      if (error == 0) return;
      if (error == EMSGSIZE) throw os_error(E2BIG, "spawn " + name);
      // A spawner that died (killed by hand, out of memory) is replaced, once per request.
      forget();
      if (attempt > 0 || (error != EPIPE && error != ECONNRESET && error != ECONNREFUSED)) {
        throw os_error(error, "spawn " + name + ": send to the spawner");
      }
    }
  }

 private:
  void ensure_started() {
    int status = 0;
    if (socket_ && owner_ == ::getpid() && pid_ > 0 &&
        ::waitpid(pid_, &status, WNOHANG) == pid_) {  // it died since the last request
      socket_.reset();
      pid_ = -1;
    }
    if (socket_ && owner_ == ::getpid()) return;
    if (owner_ != ::getpid()) {  // a fork of ours: the spawner and its socket are the parent's
      socket_.reset();           // the parent's copy stays open: its spawner goes on
      pid_ = -1;
    }
    std::array<int, 2> pair{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair.data()) != 0) {
      throw os_error(errno, "socketpair for the spawner");
    }
    Fd ours(pair[0]);
    Fd theirs(pair[1]);
    // Room for the largest request in one datagram (the kernel caps what it grants).
    const int room = static_cast<int>(kRequestMemory);
    (void)::setsockopt(ours.get(), SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
    const pid_t pid = ::fork();
    if (pid < 0) throw os_error(errno, "fork the spawner");
    if (pid == 0) spawner_main(theirs.get());
    socket_ = std::move(ours);
    pid_ = pid;
    owner_ = ::getpid();
  }

  // 0, or the errno of the send that failed.
  int send_request(const Header& header, const std::array<int, kPassed>& fds,
                   const std::string& strings) const {
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kPassed)> control{};
    // sendmsg only reads what the parts point at.
    std::array<iovec, 2> parts{iovec{const_cast<Header*>(&header), sizeof header},
                               iovec{const_cast<char*>(strings.data()), strings.size()}};
    msghdr message{};
    message.msg_iov = parts.data();
    message.msg_iovlen = parts.size();
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    cmsghdr* passed = CMSG_FIRSTHDR(&message);
    passed->cmsg_level = SOL_SOCKET;
    passed->cmsg_type = SCM_RIGHTS;
    passed->cmsg_len = CMSG_LEN(sizeof(int) * kPassed);
    std::memcpy(CMSG_DATA(passed), fds.data(), sizeof(int) * kPassed);
    const ssize_t sent =
        retry_eintr([&] { return ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL); });
    return sent < 0 ? errno : 0;  // a datagram goes whole or not at all
  }

  // Lets a dead (or unusable) spawner go: its socket closed, its process reaped.
  void forget() noexcept {
    socket_.reset();
    if (pid_ > 0) {
      int status = 0;
      (void)retry_eintr([&] { return ::waitpid(pid_, &status, 0); });
    }
    pid_ = -1;
  }

  std::mutex mutex_;
  Fd socket_;
  pid_t pid_ = -1;
  pid_t owner_ = -1;  // the process that started it
};

namespace {

// One per process, never destroyed: threads may start programs until the very end, and the
// spawner ends by itself when this process's end of its socket closes with the process.
Spawner& spawner() {
  static auto* const instance = new Spawner;  // NOLINT(cppcoreguidelines-owning-memory)
  return *instance;
}

}  // namespace

void spawn_supervised(const SpawnRequest& request) { spawner().spawn(request); }

void start_spawner() { spawner().start(); }

}  // namespace sockecho::detail
