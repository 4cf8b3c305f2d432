// sockecho (private): how a Program's process is started and watched. One spawner per process
// of ours (forked once, single-threaded, calling only async-signal-safe functions) forks a
// supervisor per run on request; the supervisor, a child subreaper, starts the program and kills
// its whole subtree when the program exits, when told to, or when our end of its socket closes
// (we exited, or were killed even by SIGKILL). Forking from the small spawner, not from a
// server with its threads and buffers, keeps a start cheap (bench/exec.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sockecho::detail {

// What a supervisor says on its socket (SOCK_SEQPACKET, one message each): the program started
// (its pid), could not start (an errno), or ended (its wait status), in that order, with `over`
// (a LimitHit) just before `ended` when a limit of the host killed the subtree; its end of file
// follows once the whole subtree is killed and reaped.
struct Report {
  enum Kind : int { started = 1, failed = 2, ended = 3, over = 4 };
  int kind = 0;
  int value = 0;
};

// Which of a run's limits of the host its subtree went over (Report::over's value).
enum LimitHit : int { over_memory = 1, over_cpu = 2 };

// What a supervisor is told, one message each: one byte to signal the subtree with SIGTERM or
// SIGKILL, or a RunLimits (told apart by its size). The end of file on its socket means: kill the
// subtree and end.
inline constexpr char kTerm = 'T';
inline constexpr char kKill = 'K';

// The run's limits of the host, the subtree's sums: resident bytes and CPU seconds (0: none).
// Sent by Program::run() before it feeds the program, since the program is started before its
// run's limits are known; the CPU it used before they came counts all the same.
struct RunLimits {
  std::uint64_t memory = 0;
  std::uint64_t cpu_seconds = 0;
};

// How often a supervisor with a limit measures its subtree (README: "Limits per run").
inline constexpr int kLimitPeriodMs = 50;

// One program to start: its 0-2, the supervisor's end of the socket, the files to try to exec in
// order (as a search of PATH would), and its arguments and whole environment.
struct SpawnRequest {
  int in = -1;
  int out = -1;
  int err = -1;
  int control = -1;
  const std::vector<std::string>& files;
  const std::vector<std::string>& argv;
  const std::vector<std::string>& env;
};

// Hands `request` to the spawner, starting it first if this process has none (or the one it had
// died). The descriptors are copied, not taken. The start's success or failure is reported on
// the socket. Throws std::system_error when the spawner cannot be reached or started.
void spawn_supervised(const SpawnRequest& request);

// Starts the spawner now if there is none: what it copies of this process is least before
// threads start and buffers grow.
void start_spawner();

}  // namespace sockecho::detail
