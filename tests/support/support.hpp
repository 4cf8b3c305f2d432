// Shared helpers for sockecho's tests: child processes with pipes, an in-process server, counts
// of descriptors and memory. Every wait is bounded by a timeout; nothing sleeps but eventually()'s
// pause between two questions. What needs the built programs is in programs.hpp.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "sockecho/address.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/server.hpp"

namespace sockecho::test {

using namespace std::chrono_literals;

// The reply prefix "数据是 " (UTF-8), the servers' default; server_test checks its bytes.
inline const std::string kPrefix{kServerDefaultPrefix};

// Which sanitizers this build has; the programs the tests spawn are built the same way.
// CMakeLists.txt pairs AddressSanitizer with UndefinedBehaviorSanitizer (and LeakSanitizer).
// g++ says so with __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang with __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define SOCKECHO_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOCKECHO_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define SOCKECHO_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOCKECHO_TEST_TSAN 1
#endif
#endif
#ifdef SOCKECHO_TEST_ASAN
inline constexpr bool kAddressSanitized = true;
#else
inline constexpr bool kAddressSanitized = false;
#endif
#ifdef SOCKECHO_TEST_TSAN
inline constexpr bool kThreadSanitized = true;
#else
inline constexpr bool kThreadSanitized = false;
#endif
#undef SOCKECHO_TEST_ASAN
#undef SOCKECHO_TEST_TSAN
inline constexpr bool kSanitized = kAddressSanitized || kThreadSanitized;

// How long any single wait in a test may take before the test fails instead of hanging.
inline constexpr std::chrono::milliseconds kPatience = 20s;

// Waits until `done()` holds, asking every millisecond, for kPatience at most: true as soon as it
// holds, false if it still does not when the time is up. For states a test cannot be told about
// (another process's state, a counter of the library's); the short pause between the questions
// leaves the CPU to the threads and processes being waited for.
template <typename Predicate>
[[nodiscard]] bool eventually(Predicate done) {
  const auto until = std::chrono::steady_clock::now() + kPatience;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(1ms);  // ok-sleep: the pause between two questions
  }
}

// Both ends of a pipe, close-on-exec.
struct Pipe {
  Fd read;
  Fd write;
};
Pipe make_pipe();
// Everything read from fd until end of file (or an error).
std::string read_all(int fd);

// What a child gets besides its argv and the stdio pipes.
struct SpawnOptions {
  // Further descriptors to pass on, as {descriptor in this process, number in the child}, the way
  // a service manager passes sockets; the child's copies are not close-on-exec. Numbers in the
  // child must be 3 or more, and distinct from the descriptors in this process being passed.
  std::vector<std::pair<int, int>> fds;
  // Environment variables "NAME=value" set for the child, replacing this process's own.
  std::vector<std::string> env;
  // Standard descriptors (0, 1, 2) the child starts with closed instead of on its pipe, as some
  // supervisors start daemons; what the child writes there is never read.
  std::vector<int> closed;
};

// A child process with its stdin, stdout and stderr on pipes. The destructor kills (SIGKILL) and
// reaps it if it is still running.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv);
  Child(const std::vector<std::string>& argv, const SpawnOptions& options);
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&&) = delete;
  Child& operator=(Child&&) = delete;
  ~Child();

  [[nodiscard]] pid_t pid() const { return pid_; }

  void write_stdin(std::string_view data);
  void close_stdin() { stdin_.reset(); }
  void signal(int signal_number) const;

  // The next line (without '\n') of stdout or stderr; nullopt at end of stream or timeout.
  std::optional<std::string> stdout_line(std::chrono::milliseconds timeout = kPatience);
  std::optional<std::string> stderr_line(std::chrono::milliseconds timeout = kPatience);
  // Reads stderr lines until one contains `text`; returns that line, nullopt on timeout or end.
  std::optional<std::string> wait_stderr(std::string_view text,
                                         std::chrono::milliseconds timeout = kPatience);

  // Waits for the child to exit, collecting its output meanwhile. Returns the exit code (128 +
  // signal number when killed by a signal), nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = kPatience);
  // Everything read from stdout and stderr so far, lines included.
  [[nodiscard]] const std::string& out() const { return out_all_; }
  [[nodiscard]] const std::string& err() const { return err_all_; }

 private:
  struct Stream {
    Fd fd;
    std::string pending;  // read but not yet returned as a line
    std::string* all;
  };
  std::optional<std::string> line(Stream& stream, std::chrono::milliseconds timeout);
  // Reads whatever is available from the open streams, waiting at most until deadline.
  bool pump(std::chrono::steady_clock::time_point deadline, bool until_exit);

  pid_t pid_ = -1;
  Fd pidfd_;
  std::optional<int> status_;
  Fd stdin_;
  std::string out_all_;
  std::string err_all_;
  Stream out_{Fd(), {}, &out_all_};
  Stream err_{Fd(), {}, &err_all_};
};

// For a thread that writes into a pipe its reader may leave: a write then fails with EPIPE
// instead of raising SIGPIPE, while the rest of the test process keeps the default action, so a
// SIGPIPE raised by library code under test would still be caught.
void block_sigpipe_in_this_thread() noexcept;

// The path of a program a test uses, if it is installed: on PATH, or in an sbin directory a
// PATH may lack (HAProxy is /usr/sbin/haproxy); nullopt when it is not there.
std::optional<std::string> installed(const std::string& name);

// Runs a program to completion with the given stdin, bounded by kPatience.
struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};
RunResult run(const std::vector<std::string>& argv, std::string_view input = {});

// The long options a --help text lists: the "--name" at the start of each line indented by two
// spaces ("  -h, --help" counts as "--help"), in order.
std::vector<std::string> help_options(std::string_view help);

// The port in a ready line "listening on HOST:PORT"; 0 if there is none.
std::uint16_t port_of(std::string_view ready_line);
// The body of an HTTP response: what follows the blank line that ends its head; empty when the
// head has no end.
std::string body_of(const std::string& response);

// A handler for the outcome a reply carries: "busy" is answered "try later" with outcome
// refused (reason=busy), an answer that is no success; "boom" appends "half an answer" and then
// fails (outcome failed, "boom failed", exit=3), so none of it may go out; anything else comes
// back as it is.
void outcome_handler(const Request& request, Reply& reply);

// A Server on an ephemeral loopback port, run on a thread of its own, stopped and joined by the
// destructor. Given a handler, it serves the echo protocol with the default limits.
class ServerThread {
 public:
  explicit ServerThread(ServerOptions options = {},
                        Handler handler = prefix_handler(std::string(kServerDefaultPrefix)),
                        const std::string& host = "127.0.0.1");
  ServerThread(ServerOptions options, std::shared_ptr<Protocol> protocol,
               const std::string& host = "127.0.0.1");
  // Serves on a listener of the test's own (a Unix socket, say).
  ServerThread(Listener listener, ServerOptions options, std::shared_ptr<Protocol> protocol);
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;
  ServerThread(ServerThread&&) = delete;
  ServerThread& operator=(ServerThread&&) = delete;
  ~ServerThread();

  [[nodiscard]] std::uint16_t port() const { return server_->address().port(); }
  [[nodiscard]] Server& server() { return *server_; }
  // Stops the server and waits for run() to return.
  void stop();
  // Waits until `count` connections have finished in all; false after kPatience.
  bool wait_finished(std::size_t count);
  // The records of finished connections, in the order they finished.
  std::vector<ConnectionRecord> records();

 private:
  struct Finished;
  std::shared_ptr<Finished> finished_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

// Whether an error is how a reset (RST) shows: ECONNRESET, or EPIPE for a write after the reset
// was reported.
bool is_reset(const std::error_code& code);

// Reads a connection the server must end with a reset (RST): what arrived before it, or
// std::nullopt when the connection ended any other way (a clean end of stream, a timeout).
std::optional<std::string> read_until_reset(Connection& connection);

// Number of descriptors this process has open.
int open_fd_count();
// Whether descriptor fd of this process has close-on-exec set; throws std::system_error when fd
// is not open, which is neither yes nor no.
bool close_on_exec(int fd);
// Whether a file of any type (a socket, a symbolic link even if dangling) is at path; throws
// std::system_error when that cannot be told (a directory on the way that cannot be searched).
bool exists(const std::string& path);

// A fresh directory under /tmp, removed with everything in it at the end.
class ScratchDir {
 public:
  ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ScratchDir(ScratchDir&&) = delete;
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir();
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }
  // A file's contents; empty when it does not exist (yet).
  [[nodiscard]] std::string read(const std::string& name) const;
  // Writes `content`, byte for byte, to a file in the directory; returns its path.
  std::string write(const std::string& name, std::string_view content) const;

 private:
  std::string path_;
};

// A gate for programs a test starts: while it is closed, `flock -s PATH true` blocks (no
// polling); open() lets every waiting and later one through.
class Gate {
 public:
  explicit Gate(std::string path);
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  void open() noexcept { lock_.reset(); }

 private:
  std::string path_;
  Fd lock_;  // holds the exclusive lock while the gate is closed
};
// Sockets a process has open, from /proc/PID/fd: a server's listener and its connections. Other
// descriptors are left out, since sanitizer runtimes briefly open files of their own (such as
// /proc/self/maps as each thread starts).
int socket_count(pid_t pid);
// Moves the calling thread (and the processes it starts from now on) into a network namespace
// of its own, with only a loopback interface, up: whatever a test sends there reaches nothing
// else. As root, a new network namespace; otherwise a user namespace too, mapping this user to
// its root. An empty string on success, else why not (the test is then skipped).
std::string enter_own_network_namespace();
// Sends one UDP datagram over IPv4 with any source address and port, through a raw socket (what
// an attacker who spoofs does); needs CAP_NET_RAW, which a namespace of one's own gives. Throws
// std::system_error.
void send_spoofed(const Address& from, const Address& to, std::string_view payload);
// Descriptors a process has open, from /proc/PID/fd.
int open_fds(pid_t pid);
// Whether `pid` still runs: neither gone nor a zombie left for whoever reaps it.
bool running(pid_t pid);
// The children of `pid` (those of all its threads), from /proc; empty once it is gone.
std::vector<pid_t> children_of(pid_t pid);
// The name /proc gives `pid` (its comm, such as "sockecho-spawn"), or "" once it is gone.
std::string process_name(pid_t pid);
// A memory field of /proc/PID/status ("VmRSS", "VmHWM", ...), in KiB; -1 if absent.
long status_kib(pid_t pid, std::string_view field);
// Resident memory of a process, in KiB (VmRSS), and its peak (VmHWM).
long rss_kib(pid_t pid);
long peak_rss_kib(pid_t pid);
// size bytes in a non-trivial pattern with every byte value, to check that payloads arrive
// intact. Its own, not sockecho-bench's: no test needs the two to agree, and the tests of the
// library build without tools/.
std::string pattern(std::size_t size);

}  // namespace sockecho::test
