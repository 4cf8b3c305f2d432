// sockecho: a program run for a request. A Program owns one child process and everything it
// starts, as Fd owns a descriptor: started without a shell under a supervisor of its own, fed
// and drained at once, limited in time and output, and always reaped; when its run ends, and
// when it is destroyed or this process dies, every descendant (setsid or not) is killed.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

inline constexpr std::chrono::milliseconds kDefaultKillGrace{2000};
inline constexpr std::size_t kDefaultMaxLog = std::size_t{64} << 10;

struct SOCKECHO_EXPORT ProgramLimits {
  // Longest run; on expiry the whole subtree gets SIGTERM, and SIGKILL `grace` later if any of
  // it is left. Zero: none.
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds grace = kDefaultKillGrace;
  // Most stdout bytes taken; one more kills its subtree. Zero: no limit.
  std::size_t max_output = 0;
  // Most stderr bytes passed on to the caller's line callback; the rest is counted and dropped.
  std::size_t max_log = kDefaultMaxLog;
  // Asked before each piece of stdout is kept, with its size: false when there is no room for it
  // (a memory budget), and the run ends as over max_output. Unset: no question asked.
  std::function<bool(std::size_t bytes)> charge_output;
  // Limits of the host for the program and all it starts together: resident memory in bytes
  // (summed over its processes) and CPU time. Measured every 50 ms by its supervisor; over
  // either, the whole subtree is killed (SIGKILL) and the result says which (`over`). Zero: none.
  std::uint64_t memory = 0;
  std::chrono::seconds cpu{0};
};

// How a program's run ended.
struct SOCKECHO_EXPORT ProgramResult {
  enum class End {
    exited,     // it exited by itself: `code` is its exit status (-1: unknown, its supervisor
                // was killed by someone else, and the program with it)
    signaled,   // a signal it did not catch ended it: `code` is the signal
    timed_out,  // the timeout ran out and its subtree was killed
    too_large,  // its stdout went over max_output and its subtree was killed
  };
  // The limit of the host (ProgramLimits::memory, cpu) its subtree went over, and was killed
  // for: the run failed whatever its end says.
  enum class Over { none, memory, cpu };
  End end = End::exited;
  int code = 0;
  Over over = Over::none;
  std::string output;             // its stdout, at most max_output bytes
  std::size_t log_dropped = 0;    // stderr bytes over max_log, not passed on
  std::uint64_t error_bytes = 0;  // stderr bytes written in all
  std::chrono::microseconds duration{0};

  [[nodiscard]] bool ok() const noexcept {
    return end == End::exited && code == 0 && over == Over::none;
  }
  // The outcome of this end, the one map of it: exit 0 ok; another exit, a signal or a limit of
  // the host failed; over the runtime limit timeout; over the output limit too_large.
  [[nodiscard]] Outcome outcome() const noexcept;
  // "exit=3", "signal=SIGKILL", "timeout", "too_large", then " reason=memory" or " reason=cpu"
  // when a limit of the host killed it: the words of a log line.
  [[nodiscard]] std::string describe() const;
  // "memory" or "cpu" when a limit of the host killed it, else empty: a reason= value.
  [[nodiscard]] std::string_view reason() const noexcept;
};

// Looks a program up as the start of a run will (on PATH when the name has no '/'): its path,
// or a std::system_error (ENOENT, EACCES) naming it, so a server can refuse to start with a
// program that cannot run.
[[nodiscard]] SOCKECHO_EXPORT std::string find_program(const std::string& name);

class SOCKECHO_EXPORT Program {
 public:
  // Starts argv[0] (looked up on PATH when it has no '/') with argv, under a supervisor of ours
  // (a child subreaper that kills the program's whole subtree when it exits, when told to, or
  // when this process dies, even by SIGKILL; supervisors come from one spawner process per
  // process, forked at the first start unless prepare_programs() was called), in a process group
  // of its own, with default signal dispositions and an empty signal mask, stdin, stdout and stderr
  // connected to this object and no other descriptor open, and an environment of this process's
  // plus `extra_env` ("NAME=value", replacing a variable of the same name). No shell is involved.
  // `path`, when given, is the file to run (as find_program() returned it), which saves the
  // search of PATH on every start. Throws std::system_error, e.g. "spawn nosuch: No such file or
  // directory".
  Program(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
          const std::string& path = {});
  Program(Program&&) noexcept;
  Program& operator=(Program&&) = delete;
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  // Kills the program and all it started (SIGKILL) and reaps them if run() has not already.
  ~Program();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  // Writes `input` to the program's stdin and closes it, while reading its stdout and stderr
  // (so a program that writes before it reads never deadlocks), passing each stderr line to
  // `on_log_line` (without its '\n'), until the program has exited; then kills what is left of
  // its subtree (nothing it started outlives it, not even in a session of its own) and reaps
  // it. How the program ended (exit status, signal, a limit) is the result, not an exception.
  // Once only: a second call throws std::logic_error. Throws std::system_error when the run
  // cannot be watched (its limits not handed to its supervisor, a failed poll).
  ProgramResult run(std::string_view input, const ProgramLimits& limits,
                    const std::function<void(std::string_view line)>& on_log_line = {});

  // From any thread, while the object lives: kills the whole subtree (SIGKILL) now, unless
  // the program is already reaped; run() then returns as soon as it sees the exit (ended by
  // signal SIGKILL), or at once if it starts later.
  void cancel() noexcept;
  // From any thread, while the object lives: asks the whole subtree to end (SIGTERM) unless the
  // program is already reaped; run() goes on until it has exited (cancel() then kills it).
  void terminate() noexcept;

 private:
  class SOCKECHO_NO_EXPORT Run;  // one run(): its state and its steps (program.cpp)

  // Asks the supervisor to signal the program's subtree: SIGTERM or SIGKILL.
  void tell(int signal) const noexcept;
  // Gives the supervisor the run's limits of the host, if it has any.
  void send_limits(const ProgramLimits& limits) const;
  void reap() noexcept;

  pid_t pid_ = -1;      // the program
  bool reaped_ = true;  // its supervisor gone, and with it everything below (or never started)
  std::unique_ptr<std::atomic<bool>> cancelled_ = std::make_unique<std::atomic<bool>>(false);
  // Held while reaping and by cancel() while it tells the supervisor to kill.
  std::unique_ptr<std::mutex> reaping_ = std::make_unique<std::mutex>();
  // A socket to the supervisor, whose other end only it holds: commands go down, the program's
  // start and end come up, and its end of file says the subtree is gone.
  Fd control_;
  Fd stdin_;         // written by run(), non-blocking
  Fd stdin_reader_;  // the program's end, held too so that writing never raises SIGPIPE
  Fd stdout_;
  Fd stderr_;
};

// Starts, if it is not running yet, the one process that starts every Program's process for
// this one. Called before other threads start and buffers grow, it copies least (a Daemon that
// runs programs calls it first); otherwise the first Program starts it.
SOCKECHO_EXPORT void prepare_programs();

}  // namespace sockecho
