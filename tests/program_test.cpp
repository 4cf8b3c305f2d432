// Program, the owner of a child process: fed and drained at once, limited in time and output,
// its group killed and the program reaped, and nothing of this process leaking into it.
#include "sockecho/program.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/fd.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

ProgramResult run_sh(const std::string& script, std::string_view input = {},
                     const ProgramLimits& limits = {}, const std::vector<std::string>& env = {}) {
  Program program({"sh", "-c", script}, env);
  return program.run(input, limits);
}

bool process_gone(pid_t pid) { return !test::running(pid); }

// The spawner this process started its programs through (a child named sockecho-spawn), or 0.
// When a process started, in clock ticks since boot (/proc/PID/stat, field 22): with its pid,
// what tells it from a later process that got the same pid (pids wrap at pid_max).
unsigned long long start_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // from field 3, the state
  std::string field;
  for (int i = 3; i < 22 && fields >> field; ++i) {
  }
  unsigned long long ticks = 0;
  fields >> ticks;
  return ticks;
}

pid_t spawner() {
  for (const pid_t child : test::children_of(::getpid())) {
    if (test::process_name(child) == "sockecho-spawn") return child;
  }
  return 0;
}

// A shell command that starts a grandchild in a session and process group of its own (setsid),
// which would sleep a minute, and writes its pid to `file` (whole, by a rename) once the
// grandchild has said it from its own session, through a fifo: no polling. The grandchild holds
// none of the program's pipes, so only its killing is tested.
std::string escaping_grandchild(const std::string& file) {
  return "mkfifo " + file + ".fifo; setsid sh -c 'echo $$ > " + file +
         ".fifo; exec sleep 60' </dev/null >/dev/null 2>&1 & read pid < " + file +
         ".fifo; echo $pid > " + file + ".new && mv " + file + ".new " + file + "; ";
}

// The pid `file` names once it is there, or 0.
pid_t pid_in(const test::ScratchDir& dir, const std::string& name) {
  const std::string text = dir.read(name);
  return text.empty() ? 0 : static_cast<pid_t>(std::stoi(text));
}

// Whether the grandchild is gone, bounded by test::eventually; if not, it is killed here so a
// failing test leaves nothing behind.
bool grandchild_gone(pid_t pid) {
  if (test::eventually([&] { return process_gone(pid); })) return true;
  (void)::kill(pid, SIGKILL);
  return false;
}

std::string binary_mebibyte() {
  std::string bytes(std::size_t{1} << 20, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) ^ (i >> 9));
  return bytes;
}

TEST(Program, BinaryInputComesBackWholeThroughCat) {
  const std::string input = binary_mebibyte();
  Program cat({"cat"}, {});
  const ProgramResult result = cat.run(input, {});
  EXPECT_TRUE(result.ok()) << result.describe();
  EXPECT_EQ(result.output.size(), input.size());
  EXPECT_TRUE(result.output == input);
}

TEST(Program, AProgramThatWritesBeforeItReadsDoesNotDeadlock) {
  // 1 MiB out before reading 1 MiB in: far more than a pipe holds each way.
  const ProgramResult result =
      run_sh("head -c 1048576 /dev/zero; cat >/dev/null; echo done", binary_mebibyte());
  EXPECT_TRUE(result.ok()) << result.describe();
  EXPECT_EQ(result.output.size(), (std::size_t{1} << 20) + 5);
}

TEST(Program, InputItNeverReadsRaisesNoSigpipeHere) {
  // SIGPIPE is at its default here, so a write to a pipe without a reader would end this test.
  // A program that exits at once, and one that closes its stdin and goes on, with far more input
  // than a pipe holds: each run ends with the program's own result.
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old), 0);
  const std::string input = binary_mebibyte();
  const ProgramResult gone = run_sh("exit 0", input);
  EXPECT_TRUE(gone.ok()) << gone.describe();
  const ProgramResult closed = run_sh("exec 0<&-; echo still here", input);
  EXPECT_TRUE(closed.ok()) << closed.describe();
  EXPECT_EQ(closed.output, "still here\n");
  ASSERT_EQ(::sigaction(SIGPIPE, &old, nullptr), 0);
}

TEST(Program, AGivenPathIsRunWithArgvAsGiven) {
  // exec_handler() looks the program up once and passes the path: argv[0] stays the caller's.
  Program program({"my-name", "-c", "echo \"$0\""}, {}, find_program("sh"));
  const ProgramResult result = program.run({}, {});
  EXPECT_TRUE(result.ok()) << result.describe();
  EXPECT_EQ(result.output, "my-name\n");
}

TEST(Program, ExitStatusAndSignalAreReported) {
  const ProgramResult three = run_sh("exit 3");
  EXPECT_EQ(three.end, ProgramResult::End::exited);
  EXPECT_EQ(three.code, 3);
  EXPECT_EQ(three.describe(), "exit=3");
  EXPECT_FALSE(three.ok());

  const ProgramResult killed = run_sh("kill -KILL $$");
  EXPECT_EQ(killed.end, ProgramResult::End::signaled);
  EXPECT_EQ(killed.code, SIGKILL);
  EXPECT_EQ(killed.describe(), "signal=SIGKILL");
}

TEST(Program, TheTimeoutEndsTheWholeGroupGrandchildrenToo) {
  ProgramLimits limits;
  limits.timeout = 300ms;
  limits.grace = 500ms;
  // The grandchild (a program that never ends) says its pid, then outlives its parent's wait unless
  // killed.
  const ProgramResult result = run_sh("tail -f /dev/null & echo $!; wait", {}, limits);
  EXPECT_EQ(result.end, ProgramResult::End::timed_out);
  EXPECT_EQ(result.describe(), "timeout");
  EXPECT_GE(result.duration, 300ms);
  const pid_t grandchild = std::stoi(result.output);
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(test::eventually([&] { return process_gone(grandchild); })) << grandchild;
}

TEST(Program, AProgramThatIgnoresSigtermIsKilledAfterTheGrace) {
  ProgramLimits limits;
  limits.timeout = 200ms;
  limits.grace = 300ms;
  const ProgramResult result = run_sh("trap '' TERM; exec tail -f /dev/null", {}, limits);
  EXPECT_EQ(result.end, ProgramResult::End::timed_out);
  EXPECT_GE(result.duration, 500ms);
  EXPECT_LT(result.duration, 500ms + test::kPatience);
}

TEST(Program, NothingItStartedOutlivesANormalExit) {
  const ProgramResult result = run_sh("tail -f /dev/null & echo $!");
  EXPECT_TRUE(result.ok()) << result.describe();
  const pid_t left_behind = std::stoi(result.output);
  EXPECT_TRUE(test::eventually([&] { return process_gone(left_behind); })) << left_behind;
}

TEST(Program, OutputOverTheLimitKillsItAndKeepsOnlyTheLimit) {
  ProgramLimits limits;
  limits.max_output = std::size_t{64} << 10;
  const ProgramResult result = run_sh("yes", {}, limits);  // endless output
  EXPECT_EQ(result.end, ProgramResult::End::too_large);
  EXPECT_EQ(result.output.size(), limits.max_output);
}

TEST(Program, OnlyDescriptorsZeroToTwoAreInherited) {
  // One descriptor of this process's without close-on-exec, as a careless library user's.
  const int leaky = ::fcntl(STDERR_FILENO, F_DUPFD, 10);
  ASSERT_GE(leaky, 10);
  std::vector<int> open;
  {
    const Program cat({"cat"}, {});
    const std::string fd_dir = "/proc/" + std::to_string(cat.pid()) + "/fd";
    // While it starts, cat opens files of its own (its libraries, its locale); once it is
    // blocked reading its input (read(0, ...), syscall 0), only what it was given is left.
    const std::string syscall_file = "/proc/" + std::to_string(cat.pid()) + "/syscall";
    ASSERT_TRUE(test::eventually([&] {
      std::ifstream in(syscall_file);
      std::string number;
      std::string fd;
      in >> number >> fd;
      return number == "0" && fd == "0x0";
    }));
    for (const auto& entry : std::filesystem::directory_iterator(fd_dir)) {
      open.push_back(std::stoi(entry.path().filename().string()));
    }
    std::sort(open.begin(), open.end());
  }
  ::close(leaky);  // NOLINT: the test's own stand-in for someone else's descriptor
  EXPECT_EQ(open, (std::vector<int>{0, 1, 2}));
}

TEST(Program, StartsWithDefaultSignalsWhateverThisThreadBlocksOrIgnores) {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigset_t before;
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &before), 0);
  const auto old_int = std::signal(SIGINT, SIG_IGN);
  const ProgramResult result = run_sh("grep -E '^Sig(Blk|Ign)' /proc/self/status");
  (void)std::signal(SIGINT, old_int);
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  EXPECT_TRUE(result.ok()) << result.describe();
  std::istringstream lines(result.output);
  std::string blocked;
  std::string ignored;
  lines >> blocked >> blocked >> ignored >> ignored;
  EXPECT_EQ(std::stoull(blocked, nullptr, 16), 0U) << result.output;
  // Signals 32 and 33 are the C library's own (thread cancellation, set*id), outside
  // sigfillset(): no program can reset them, and this process may have inherited them ignored.
  constexpr unsigned long long kLibcSignals = (1ULL << 31) | (1ULL << 32);
  EXPECT_EQ(std::stoull(ignored, nullptr, 16) & ~kLibcSignals, 0U) << result.output;
}

TEST(Program, TheEnvironmentIsThisProcessesPlusTheExtras) {
  // No other thread of this test reads the environment.
  ASSERT_EQ(::setenv("SOCKECHO_TEST_INHERITED", "kept", 1), 0);  // NOLINT(concurrency-mt-unsafe)
  ASSERT_EQ(::setenv("SOCKECHO_TEST_REPLACED", "old", 1), 0);    // NOLINT(concurrency-mt-unsafe)
  const ProgramResult result =
      run_sh("echo \"$SOCKECHO_TEST_INHERITED $SOCKECHO_TEST_REPLACED $EXTRA\"", {}, {},
             {"SOCKECHO_TEST_REPLACED=new", "EXTRA=x y"});
  EXPECT_EQ(result.output, "kept new x y\n");
}

TEST(Program, StderrLinesArePassedOnWithinTheirBudget) {
  std::vector<std::string> lines;
  ProgramLimits limits;
  limits.max_log = 10;
  Program program({"sh", "-c", "echo one >&2; echo two >&2; echo three-is-long >&2; printf x >&2"},
                  {});
  const ProgramResult result =
      program.run({}, limits, [&](std::string_view line) { lines.emplace_back(line); });
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(result.log_dropped, std::string("three-is-long").size() + 1);
}

TEST(Program, AProgramThatCannotStartIsAnError) {
  try {
    Program program({"sockecho-no-such-program"}, {});
    FAIL() << "started";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_NE(std::string(e.what()).find("sockecho-no-such-program"), std::string::npos);
  }
}

TEST(Program, FindProgramLooksOnPathAndChecksItCanRun) {
  EXPECT_EQ(find_program("sh").back(), 'h');
  EXPECT_EQ(find_program("/bin/sh"), "/bin/sh");
  try {
    (void)find_program("sockecho-no-such-program");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
  }
  const std::string plain = std::string(SOCKECHO_SOURCE_DIR) + "/README.md";  // not executable
  try {
    (void)find_program(plain);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::permission_denied);
  }
}

TEST(Program, DestroyingItUnrunKillsAndReapsIt) {
  pid_t pid = 0;
  {
    const Program program({"tail", "-f", "/dev/null"}, {});
    pid = program.pid();
    ASSERT_FALSE(process_gone(pid));
  }
  // Reaped by the destructor: no zombie left, the pid is gone at once.
  EXPECT_FALSE(std::ifstream("/proc/" + std::to_string(pid) + "/status").good());
}

TEST(Program, AGrandchildInASessionOfItsOwnDiesWhenTheProgramExits) {
  const test::ScratchDir dir;
  const ProgramResult result = run_sh(escaping_grandchild(dir.file("pid")) + "exit 0");
  EXPECT_TRUE(result.ok()) << result.describe();
  const pid_t grandchild = pid_in(dir, "pid");
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(grandchild_gone(grandchild)) << grandchild;
}

TEST(Program, AGrandchildInASessionOfItsOwnDiesAtTheTimeout) {
  const test::ScratchDir dir;
  ProgramLimits limits;
  limits.timeout = 300ms;
  limits.grace = 300ms;
  const ProgramResult result =
      run_sh(escaping_grandchild(dir.file("pid")) + "exec sleep 60", {}, limits);
  EXPECT_EQ(result.end, ProgramResult::End::timed_out);
  EXPECT_LT(result.duration, 600ms + test::kPatience);
  const pid_t grandchild = pid_in(dir, "pid");
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(grandchild_gone(grandchild)) << grandchild;
}

TEST(Program, AGrandchildInASessionOfItsOwnDiesOnCancel) {
  const test::ScratchDir dir;
  Program program({"sh", "-c", escaping_grandchild(dir.file("pid")) + "exec sleep 60"}, {});
  ProgramResult result;
  std::thread runner([&] { result = program.run({}, {}); });
  const bool started = test::eventually([&] { return pid_in(dir, "pid") > 0; });
  program.cancel();
  runner.join();
  ASSERT_TRUE(started);
  EXPECT_EQ(result.end, ProgramResult::End::signaled);
  EXPECT_EQ(result.code, SIGKILL);
  EXPECT_TRUE(grandchild_gone(pid_in(dir, "pid"))) << pid_in(dir, "pid");
}

TEST(Program, DestroyingItKillsAGrandchildInASessionOfItsOwn) {
  const test::ScratchDir dir;
  {
    const Program program({"sh", "-c", escaping_grandchild(dir.file("pid")) + "exec sleep 60"}, {});
    ASSERT_TRUE(test::eventually([&] { return pid_in(dir, "pid") > 0; }));
  }
  EXPECT_TRUE(grandchild_gone(pid_in(dir, "pid"))) << pid_in(dir, "pid");
}

TEST(Program, AProgramThatKillsItsSupervisorIsKilledWithAllItStarted) {
  const test::ScratchDir dir;
  // The program's parent is its supervisor: killing it hands the program, and the grandchild
  // in its own session, to the spawner, which kills them both.
  const ProgramResult result = run_sh(escaping_grandchild(dir.file("pid")) + "echo $$ > " +
                                      dir.file("program") + "; kill -9 $PPID; exec sleep 60");
  EXPECT_EQ(result.end, ProgramResult::End::exited);
  EXPECT_EQ(result.code, -1) << "no status without the supervisor";
  EXPECT_LT(result.duration, test::kPatience);
  const pid_t program = pid_in(dir, "program");
  const pid_t grandchild = pid_in(dir, "pid");
  ASSERT_GT(program, 1);
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(grandchild_gone(program)) << program;
  EXPECT_TRUE(grandchild_gone(grandchild)) << grandchild;
  EXPECT_EQ(run_sh("echo still").output, "still\n");
}

TEST(Program, ASpawnerKilledByHandIsReplacedAtTheNextStart) {
  EXPECT_EQ(run_sh("echo one").output, "one\n");
  const pid_t first = spawner();
  ASSERT_GT(first, 0);
  const unsigned long long first_start = start_time(first);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(test::eventually([&] { return !test::running(first); }));
  EXPECT_EQ(run_sh("echo two").output, "two\n");
  const pid_t second = spawner();
  ASSERT_GT(second, 0);
  // Another process: another pid, or the same one reused (a busy machine wraps pid_max) with a
  // later start.
  EXPECT_TRUE(second != first || start_time(second) > first_start)
      << first << " started at " << first_start << ", " << second << " at " << start_time(second);
}

TEST(Program, TheSpawnerAndItsSupervisorsHoldNoneOfThisProcesssDescriptors) {
  // A descriptor of this process's, not close-on-exec, open when the spawner starts.
  const Fd open_here(::open("/dev/null", O_RDONLY));
  ASSERT_TRUE(open_here);
  EXPECT_EQ(run_sh("echo one").output, "one\n");
  const pid_t spawning = spawner();
  ASSERT_GT(spawning, 0);
  // Its pool socket, the two ends of its supervisors' pipe and its signalfd.
  EXPECT_TRUE(test::eventually([&] { return test::open_fds(spawning) == 4; }))
      << test::open_fds(spawning);
  const std::vector<pid_t> supervisors = test::children_of(spawning);
  ASSERT_FALSE(supervisors.empty());
  for (const pid_t supervisor : supervisors) {
    // Once ready (a supervisor just forked is still arranging them): the pool, its end of the
    // pipe and its signalfd.
    EXPECT_TRUE(test::eventually([&] {
      return test::process_name(supervisor) == "sockecho-run" && test::open_fds(supervisor) == 3;
    })) << supervisor
        << " " << test::process_name(supervisor) << " " << test::open_fds(supervisor);
  }
}

// Per-run limits of the host: the subtree's resident memory and CPU, summed, measured by the
// supervisor. Each run is bounded by a timeout, so a limit that is not enforced fails the test
// (timed_out) rather than hanging it.
constexpr std::uint64_t kMemoryLimit = std::uint64_t{64} << 20;
const std::string kHog = SOCKECHO_HOG_PROGRAM;

ProgramLimits host_limits(std::uint64_t memory, std::chrono::seconds cpu) {
  ProgramLimits limits;
  limits.timeout = test::kPatience;
  limits.memory = memory;
  limits.cpu = cpu;
  return limits;
}

void expect_killed_for(const ProgramResult& result, ProgramResult::Over over) {
  EXPECT_EQ(result.over, over) << result.describe();
  EXPECT_EQ(result.end, ProgramResult::End::signaled) << result.describe();
  EXPECT_EQ(result.code, SIGKILL);
  EXPECT_EQ(result.outcome(), Outcome::failed);
  EXPECT_FALSE(result.ok());
}

TEST(ProgramLimits, AProgramOverTheMemoryLimitIsKilledWithReasonMemory) {
  Program program({kHog, "memory", std::to_string(2 * kMemoryLimit)}, {});
  const ProgramResult result = program.run({}, host_limits(kMemoryLimit, 0s));
  expect_killed_for(result, ProgramResult::Over::memory);
  EXPECT_EQ(result.reason(), "memory");
  EXPECT_EQ(result.describe(), "signal=SIGKILL reason=memory");
}

TEST(ProgramLimits, TheMemoryOfForkedChildrenCountsTogether) {
  // Each of the two holds three quarters of the limit: only their sum is over it.
  const std::string each = std::to_string(kMemoryLimit / 4 * 3);
  const ProgramResult result =
      run_sh(kHog + " memory " + each + " & exec " + kHog + " memory " + each, {},
             host_limits(kMemoryLimit, 0s));
  expect_killed_for(result, ProgramResult::Over::memory);
}

TEST(ProgramLimits, AGrandchildInASessionOfItsOwnCountsAndDies) {
  // The program's child waits for the grandchild, which is in a session of its own.
  const test::ScratchDir dir;
  const ProgramResult result =
      run_sh("sh -c 'setsid " + kHog + " memory " + std::to_string(2 * kMemoryLimit) +
                 " & echo $! > " + dir.file("pid") + "; wait'; exec sleep 60",
             {}, host_limits(kMemoryLimit, 0s));
  expect_killed_for(result, ProgramResult::Over::memory);
  const pid_t grandchild = pid_in(dir, "pid");
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(grandchild_gone(grandchild)) << grandchild;
}

TEST(ProgramLimits, AnOrphanInASessionOfItsOwnCountsAndDies) {
  // Its parent exits at once: the orphan is the supervisor's (a subreaper) from then on, and
  // still the run's.
  const test::ScratchDir dir;
  const ProgramResult result =
      run_sh("sh -c 'setsid " + kHog + " memory " + std::to_string(2 * kMemoryLimit) +
                 " & echo $! > " + dir.file("pid") + "'; exec sleep 60",
             {}, host_limits(kMemoryLimit, 0s));
  expect_killed_for(result, ProgramResult::Over::memory);
  const pid_t orphan = pid_in(dir, "pid");
  ASSERT_GT(orphan, 1);
  EXPECT_TRUE(grandchild_gone(orphan)) << orphan;
}

TEST(ProgramLimits, ABusyLoopOverTheCpuLimitIsKilledWithReasonCpu) {
  Program program({kHog, "cpu"}, {});
  const ProgramResult result = program.run({}, host_limits(0, 1s));
  expect_killed_for(result, ProgramResult::Over::cpu);
  EXPECT_EQ(result.describe(), "signal=SIGKILL reason=cpu");
  EXPECT_GE(result.duration, 1s) << "a second of CPU takes a second at least";
}

TEST(ProgramLimits, CpuOfChildrenThatEndedCounts) {
  // Two runs of 0.7 s each, one after the other, each waited for by the shell (its cutime),
  // then a program that uses none: only their sum is over the limit.
  const ProgramResult result =
      run_sh(kHog + " cpu 700; " + kHog + " cpu 700; exec sleep 60", {}, host_limits(0, 1s));
  expect_killed_for(result, ProgramResult::Over::cpu);
}

TEST(ProgramLimits, CpuOfOrphansTheSupervisorReapedCounts) {
  // Each run of 0.7 s is an orphan (its parent exits at once), reaped by the supervisor, and
  // says it is done through a fifo, so the second starts after the first has ended: only the
  // supervisor's count of what it reaped makes their sum over the limit.
  const test::ScratchDir dir;
  const std::string fifo = dir.file("done");
  const std::string orphan =
      "sh -c '(" + kHog + " cpu 700; echo > " + fifo + ") &'; read done < " + fifo + "; ";
  const ProgramResult result =
      run_sh("mkfifo " + fifo + "; " + orphan + orphan + "exec sleep 60", {}, host_limits(0, 1s));
  expect_killed_for(result, ProgramResult::Over::cpu);
}

TEST(ProgramLimits, ARunUnderBothLimitsEndsUntouched) {
  // A quarter of the memory limit, held over several measurements, and little CPU.
  Program program({kHog, "memory", std::to_string(kMemoryLimit / 4), "300"}, {});
  const ProgramResult result = program.run({}, host_limits(kMemoryLimit, 1s));
  EXPECT_TRUE(result.ok()) << result.describe();
  EXPECT_EQ(result.over, ProgramResult::Over::none);
  EXPECT_EQ(result.describe(), "exit=0");
  EXPECT_EQ(result.reason(), "");
}

TEST(ProgramLimits, ProgramsStartWithTheHighestOutOfMemoryScore) {
  // The kernel's out-of-memory killer takes them before the server (this test, score 0 or less).
  const ProgramResult result = run_sh("cat /proc/self/oom_score_adj");
  EXPECT_EQ(result.output, "1000\n");
}

}  // namespace
}  // namespace sockecho
