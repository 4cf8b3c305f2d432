#include "support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "sockecho/error.hpp"
#include "sockecho/program.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): posix_spawn wants it

namespace sockecho::test {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

Pipe make_pipe() {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw os_error(errno, "pipe2");
  return {Fd(fds[0]), Fd(fds[1])};
}

std::string read_all(int fd) {
  std::string out;
  std::array<char, 65536> chunk{};
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd, chunk.data(), chunk.size()); });
    if (n <= 0) return out;
    out.append(chunk.data(), static_cast<std::size_t>(n));
  }
}

Child::Child(const std::vector<std::string>& argv) : Child(argv, SpawnOptions{}) {}

Child::Child(const std::vector<std::string>& argv, const SpawnOptions& options) {
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the copies, so the child gets exactly these three, less those
  // asked closed (which this process's own 0, 1 and 2 would otherwise fill).
  for (const auto& [pipe_end, fd] :
       {std::pair{in.read.get(), STDIN_FILENO}, std::pair{out.write.get(), STDOUT_FILENO},
        std::pair{err.write.get(), STDERR_FILENO}}) {
    if (std::find(options.closed.begin(), options.closed.end(), fd) != options.closed.end()) {
      posix_spawn_file_actions_addclose(&actions, fd);
    } else {
      posix_spawn_file_actions_adddup2(&actions, pipe_end, fd);
    }
  }
  for (const auto& [from, to] : options.fds) posix_spawn_file_actions_adddup2(&actions, from, to);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  // The child starts with default signal handling and nothing blocked, whatever the test did.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // This process's environment, less the variables options.env replaces, plus those.
  std::vector<char*> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view existing(*entry);
    const bool replaced = std::any_of(options.env.begin(), options.env.end(), [&](const auto& e) {
      const std::size_t equals = e.find('=');
      return existing.substr(0, existing.find('=')) == std::string_view(e).substr(0, equals);
    });
    if (!replaced) env.push_back(*entry);
  }
  for (const std::string& entry : options.env) env.push_back(const_cast<char*>(entry.c_str()));
  env.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, args[0], &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw os_error(rc, "posix_spawn " + argv[0]);
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_) throw os_error(errno, "pidfd_open");
  stdin_ = std::move(in.write);
  out_.fd = std::move(out.read);
  err_.fd = std::move(err.read);
}

Child::~Child() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

void Child::write_stdin(std::string_view data) { write_all(stdin_.get(), data, "child stdin"); }

void Child::signal(int signal_number) const {
  if (!status_) ::kill(pid_, signal_number);
}

bool Child::pump(Clock::time_point deadline, bool until_exit) {
  std::array<pollfd, 3> fds{};
  fds[0] = {out_.fd.get(), POLLIN, 0};
  fds[1] = {err_.fd.get(), POLLIN, 0};
  fds[2] = {until_exit && !status_ ? pidfd_.get() : -1, POLLIN, 0};
  const int ready = ::poll(fds.data(), fds.size(), remaining_ms(deadline));
  if (ready < 0 && errno != EINTR) throw os_error(errno, "poll");
  if (ready <= 0) return false;
  std::array<char, 65536> chunk{};
  for (Stream* stream : {&out_, &err_}) {
    const pollfd& p = stream == &out_ ? fds[0] : fds[1];
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    const ssize_t n = ::read(stream->fd.get(), chunk.data(), chunk.size());
    if (n <= 0) {
      stream->fd.reset();
    } else {
      stream->pending.append(chunk.data(), static_cast<std::size_t>(n));
      stream->all->append(chunk.data(), static_cast<std::size_t>(n));
    }
  }
  if ((fds[2].revents & POLLIN) != 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  return true;
}

std::optional<std::string> Child::line(Stream& stream, std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const std::size_t newline = stream.pending.find('\n');
    if (newline != std::string::npos) {
      std::string line = stream.pending.substr(0, newline);
      stream.pending.erase(0, newline + 1);
      return line;
    }
    if (!stream.fd || Clock::now() >= deadline) return std::nullopt;
    pump(deadline, false);
  }
}

std::optional<std::string> Child::stdout_line(std::chrono::milliseconds timeout) {
  return line(out_, timeout);
}

std::optional<std::string> Child::stderr_line(std::chrono::milliseconds timeout) {
  return line(err_, timeout);
}

std::optional<std::string> Child::wait_stderr(std::string_view text,
                                              std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    auto next = stderr_line(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::max(deadline - Clock::now(), Clock::duration::zero())));
    if (!next) return std::nullopt;
    if (next->find(text) != std::string::npos) return next;
  }
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  while (!status_ || out_.fd || err_.fd) {
    if (Clock::now() >= deadline) return std::nullopt;
    pump(deadline, true);
  }
  return status_;
}

std::optional<std::string> installed(const std::string& name) {
  for (const std::string& candidate :
       {name, "/usr/local/sbin/" + name, "/usr/sbin/" + name, "/sbin/" + name}) {
    try {
      return find_program(candidate);
    } catch (const std::system_error&) {  // not there: try the next
    }
  }
  return std::nullopt;
}

void block_sigpipe_in_this_thread() noexcept {
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
}

RunResult run(const std::vector<std::string>& argv, std::string_view input) {
  Child child(argv);
  // Feed stdin from a thread so a child that writes a lot before reading cannot deadlock us.
  std::thread feeder([&] {
    block_sigpipe_in_this_thread();  // a child may exit without reading all its input
    try {
      child.write_stdin(input);
    } catch (const std::system_error&) {  // the child exited without reading all of it
    }
    child.close_stdin();
  });
  const std::optional<int> status = child.wait();
  feeder.join();
  if (!status) throw std::runtime_error("timed out running " + argv[0]);
  return {*status, child.out(), child.err()};
}

std::vector<std::string> help_options(std::string_view help) {
  std::vector<std::string> options;
  std::size_t start = 0;
  while (start < help.size()) {
    std::size_t end = help.find('\n', start);
    if (end == std::string_view::npos) end = help.size();
    const std::string_view line = help.substr(start, end - start);
    start = end + 1;
    std::size_t at = 2;  // "  --name"
    if (line.substr(0, 8) == "  -h, --") {
      at = 6;  // "  -h, --help": the long name
    } else if (line.substr(0, 4) != "  --") {
      continue;
    }
    const std::size_t name_end = line.find_first_not_of("abcdefghijklmnopqrstuvwxyz-", at + 2);
    options.emplace_back(
        line.substr(at, name_end == std::string_view::npos ? name_end : name_end - at));
  }
  return options;
}

std::uint16_t port_of(std::string_view ready_line) {
  const std::size_t colon = ready_line.rfind(':');
  if (colon == std::string_view::npos) return 0;
  try {
    return parse_port(ready_line.substr(colon + 1));
  } catch (const std::invalid_argument&) {
    return 0;
  }
}

std::string body_of(const std::string& response) {
  const std::size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

struct ServerThread::Finished {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<ConnectionRecord> records;
};

ServerThread::ServerThread(ServerOptions options, Handler handler, const std::string& host)
    : ServerThread(std::move(options), echo_protocol(std::move(handler)), host) {}

ServerThread::ServerThread(ServerOptions options, std::shared_ptr<Protocol> protocol,
                           const std::string& host)
    : ServerThread(Listener::bind(host, 0), std::move(options), std::move(protocol)) {}

ServerThread::ServerThread(Listener listener, ServerOptions options,
                           std::shared_ptr<Protocol> protocol)
    : finished_(std::make_shared<Finished>()) {
  auto user_callback = std::move(options.on_connection);
  options.on_connection = [finished = finished_, user_callback](const ConnectionRecord& record) {
    if (user_callback) user_callback(record);
    {
      const std::lock_guard<std::mutex> lock(finished->mutex);
      finished->records.push_back(record);
    }
    finished->changed.notify_all();
  };
  server_ = std::make_unique<Server>(std::move(listener), std::move(protocol), std::move(options));
  thread_ = std::thread([this] {
    try {
      server_->run();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "Server::run() failed: " << e.what();
    }
  });
}

ServerThread::~ServerThread() { stop(); }

void ServerThread::stop() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

bool ServerThread::wait_finished(std::size_t count) {
  std::unique_lock<std::mutex> lock(finished_->mutex);
  return finished_->changed.wait_for(lock, kPatience,
                                     [&] { return finished_->records.size() >= count; });
}

std::vector<ConnectionRecord> ServerThread::records() {
  const std::lock_guard<std::mutex> lock(finished_->mutex);
  return finished_->records;
}

int open_fd_count() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count - 1;  // the directory iterator's own descriptor
}

bool close_on_exec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) {
    throw std::system_error(errno, std::generic_category(), "fcntl F_GETFD " + std::to_string(fd));
  }
  return (flags & FD_CLOEXEC) != 0;
}

bool exists(const std::string& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) == 0) return true;
  if (errno == ENOENT || errno == ENOTDIR) return false;
  throw std::system_error(errno, std::generic_category(), "lstat " + path);
}

int socket_count(pid_t pid) {
  int count = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code gone;  // closed since the directory was read
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), gone);
    if (!gone && target.native().rfind("socket:", 0) == 0) ++count;
  }
  return count;
}

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) throw std::system_error(errno, std::generic_category(), "write " + path);
}

}  // namespace

std::string enter_own_network_namespace() {
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWNET) != 0) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      return std::string("unshare: ") + std::system_category().message(errno);
    }
    try {
      write_file("/proc/self/setgroups", "deny");
      write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1");
      write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
    } catch (const std::system_error& e) {
      return e.what();
    }
  }
  const Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket) return std::string("socket: ") + std::system_category().message(errno);
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(socket.get(), SIOCGIFFLAGS, &request) != 0) {
    return std::string("SIOCGIFFLAGS lo: ") + std::system_category().message(errno);
  }
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket.get(), SIOCSIFFLAGS, &request) != 0) {
    return std::string("SIOCSIFFLAGS lo up: ") + std::system_category().message(errno);
  }
  return {};
}

void send_spoofed(const Address& from, const Address& to, std::string_view payload) {
  if (from.family() != AF_INET || to.family() != AF_INET) {
    throw std::invalid_argument("send_spoofed: IPv4 only");
  }
  const Fd raw(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));  // IP_HDRINCL implied
  if (!raw) throw os_error(errno, "socket SOCK_RAW");
  const auto* source = reinterpret_cast<const sockaddr_in*>(from.data());
  const auto* target = reinterpret_cast<const sockaddr_in*>(to.data());
  std::string packet(sizeof(iphdr) + sizeof(udphdr) + payload.size(), '\0');
  iphdr ip{};
  ip.version = 4;
  ip.ihl = sizeof(iphdr) / 4;
  ip.ttl = 64;
  ip.protocol = IPPROTO_UDP;
  ip.tot_len = htons(static_cast<std::uint16_t>(packet.size()));  // the kernel fills the checksum
  ip.saddr = source->sin_addr.s_addr;
  ip.daddr = target->sin_addr.s_addr;
  udphdr udp{};
  udp.source = source->sin_port;
  udp.dest = target->sin_port;
  udp.len = htons(static_cast<std::uint16_t>(sizeof(udphdr) + payload.size()));
  udp.check = 0;  // none, which IPv4 allows
  std::memcpy(packet.data(), &ip, sizeof ip);
  std::memcpy(packet.data() + sizeof ip, &udp, sizeof udp);
  std::memcpy(packet.data() + sizeof ip + sizeof udp, payload.data(), payload.size());
  if (::sendto(raw.get(), packet.data(), packet.size(), 0, to.data(), to.size()) < 0) {
    throw os_error(errno, "sendto (spoofed from " + from.to_string() + ") " + to.to_string());
  }
}

int open_fds(pid_t pid) {
  int count = 0;
  std::error_code gone;
  for (std::filesystem::directory_iterator fd("/proc/" + std::to_string(pid) + "/fd", gone), end;
       !gone && fd != end; fd.increment(gone)) {
    ++count;
  }
  return count;
}

bool running(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("State:", 0) == 0) return line.find('Z') == std::string::npos;
  }
  return false;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  std::error_code gone;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  // Threads come and go while this reads: errors end the walk, never throw.
  for (std::filesystem::directory_iterator task(tasks, gone), end; !gone && task != end;
       task.increment(gone)) {
    std::ifstream list(task->path() / "children");
    for (pid_t child = 0; list >> child;) children.push_back(child);
  }
  return children;
}

std::string process_name(pid_t pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

long status_kib(pid_t pid, std::string_view field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const std::string wanted = std::string(field) + ":";
  std::string key;
  while (status >> key) {
    if (key == wanted) {
      long kib = 0;
      status >> kib;
      return kib;
    }
    status.ignore(1 << 20, '\n');
  }
  return -1;
}

long rss_kib(pid_t pid) { return status_kib(pid, "VmRSS"); }

long peak_rss_kib(pid_t pid) { return status_kib(pid, "VmHWM"); }

bool is_reset(const std::error_code& code) {
  return code == std::errc::connection_reset || code == std::errc::broken_pipe;
}

std::optional<std::string> read_until_reset(Connection& connection) {
  std::string got;
  std::array<char, 4096> chunk{};
  try {
    while (const std::size_t n = connection.read_some(chunk.data(), chunk.size())) {
      got.append(chunk.data(), n);
    }
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::connection_reset) return got;
  }
  return std::nullopt;
}

void outcome_handler(const Request& request, Reply& reply) {
  if (request.bytes() == "busy") {
    reply.append("try later");
    reply.set_outcome(Outcome::refused, "reason=busy");
  } else if (request.bytes() == "boom") {
    reply.append("half an answer");
    reply.fail(Outcome::failed, "boom failed", "exit=3");
  } else {
    reply.append_ref(request.bytes());
  }
}

std::string pattern(std::size_t size) {
  // The top byte of a 64-bit linear congruential sequence (Knuth's MMIX constants): every byte
  // value, and no period a test's payload could reach, so a dropped, repeated or changed byte
  // shows. (sockecho-bench fills its payloads its own way; nothing needs the two to agree.)
  std::string data(size, '\0');
  std::uint64_t state = 1;
  for (char& c : data) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(state >> 56);
  }
  return data;
}

ScratchDir::ScratchDir() {
  std::string name = "/tmp/sockecho-test-XXXXXX";
  if (::mkdtemp(name.data()) == nullptr) throw std::system_error(errno, std::generic_category());
  path_ = name;
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string ScratchDir::read(const std::string& name) const {
  std::ifstream in(file(name));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string ScratchDir::write(const std::string& name, std::string_view content) const {
  std::string path = file(name);
  std::ofstream out(path, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out.flush()) throw std::runtime_error("write " + path);
  return path;
}

Gate::Gate(std::string path) : path_(std::move(path)) {
  lock_ = Fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_ || ::flock(lock_.get(), LOCK_EX) != 0) {
    throw std::system_error(errno, std::generic_category(), "gate " + path_);
  }
}

}  // namespace sockecho::test
