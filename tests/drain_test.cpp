// Taking one of several sockecho-server instances away without losing a request: a rolling
// restart of --reuseport instances, whose queued connections Linux moves to the group's other
// listeners (net.ipv4.tcp_migrate_req, set only inside a network namespace the test creates),
// and HAProxy taking an instance out once its /health answers 503.
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/program.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::FixedPortServer;
using test::MeteredServer;
using test::ServerProcess;

constexpr const char* kMigrateReq = "/proc/sys/net/ipv4/tcp_migrate_req";

std::string os_reason(int err) { return std::error_code(err, std::generic_category()).message(); }

// Runs body on a thread of its own that has moved into a new network namespace with only lo,
// brought up. The threads it creates and the programs it starts (posix_spawn clones the calling
// thread) live there too; the rest of this process stays in the host's namespace. Returns why
// not, when the namespace cannot be made (not root, namespaces disabled).
std::optional<std::string> in_new_network_namespace(const std::function<void()>& body) {
  std::optional<std::string> why_not;
  std::thread thread([&] {
    // CLONE_NEWNET moves only the calling thread, which is what keeps the host's untouched.
    if (::unshare(CLONE_NEWNET) != 0) {
      why_not = "unshare(CLONE_NEWNET): " + os_reason(errno) + " (needs root)";
      return;
    }
    const Fd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq lo{};
    std::strncpy(lo.ifr_name, "lo", IFNAMSIZ - 1);
    if (!control || ::ioctl(control.get(), SIOCGIFFLAGS, &lo) != 0) {
      why_not = "lo in the new namespace: " + os_reason(errno);
      return;
    }
    lo.ifr_flags = static_cast<short>(lo.ifr_flags | IFF_UP);
    if (::ioctl(control.get(), SIOCSIFFLAGS, &lo) != 0) {
      why_not = "bringing lo up: " + os_reason(errno);
      return;
    }
    body();
  });
  thread.join();
  return why_not;
}

// net.ipv4.tcp_migrate_req as the calling thread sees it: /proc/sys/net shows the network
// namespace of whoever opens it. std::nullopt when the kernel has no such setting (before 5.14).
std::optional<int> migrate_req() {
  std::ifstream file(kMigrateReq);
  int value = -1;
  if (!(file >> value)) return std::nullopt;
  return value;
}

// Sets it in the calling thread's namespace; false when it cannot be written.
bool set_migrate_req(bool on) {
  std::ofstream file(kMigrateReq);
  file << (on ? 1 : 0) << '\n';
  file.flush();
  return file.good() && migrate_req() == (on ? 1 : 0);
}

// Runs scenario in a fresh namespace whose tcp_migrate_req is `migrate`. Returns why not, when
// the kernel, the namespace or the setting is unavailable.
std::optional<std::string> with_migrate_req(bool migrate, const std::function<void()>& scenario) {
  if (!migrate_req()) return std::string(kMigrateReq) + " is missing (Linux 5.14 or later)";
  std::optional<std::string> unusable;
  std::optional<std::string> why_not = in_new_network_namespace([&] {
    if (!set_migrate_req(migrate)) {
      unusable = std::string("cannot write ") + kMigrateReq + " in the new namespace";
      return;
    }
    scenario();
  });
  return why_not ? why_not : unusable;
}

// The connections queued in a stopping instance's backlog: instance A, with one worker, is busy
// with a held connection while `queued` more requests wait in its backlog; B joins the port,
// then A gets SIGTERM. Returns how many of the queued requests failed; each that succeeds must
// have been answered by B. A still finishes the held one and exits 0.
int queued_requests_lost(int queued) {
  ServerProcess a({"--reuseport", "--workers", "1", "--prefix", "A:"});
  const std::uint16_t port = a.port();
  Connection held = connect("127.0.0.1", port, test::kPatience);
  held.set_timeout(test::kPatience);
  held.write_all("held");
  // Whenever A's one worker gets to accept(), it takes the held connection (the backlog is a
  // queue) and serves it until it ends: the requests after it stay queued.
  std::vector<Connection> waiting;
  for (int i = 0; i < queued; ++i) {
    Connection c = connect("127.0.0.1", port, test::kPatience);
    c.set_timeout(test::kPatience);
    c.write_all("queued " + std::to_string(i));
    c.close_write();
    waiting.push_back(std::move(c));
  }
  // --timeout 2 bounds B's wait in accept() by 2 s: kernels before the fix "tcp: call
  // sk_data_ready() after listener migration" move connections without waking the listener's
  // blocked accept(), which then sees them at its next connection or idle timeout.
  FixedPortServer b(
      {"--reuseport", "--prefix", "B:", "--timeout", "2", "--port", std::to_string(port)});
  EXPECT_TRUE(b.ready()) << b.err();

  a.signal(SIGTERM);
  EXPECT_TRUE(a.wait_stderr("stopping")) << a.err();
  int lost = 0;
  for (int i = 0; i < queued; ++i) {
    try {
      const std::string reply = waiting[static_cast<std::size_t>(i)].read_to_end_string();
      EXPECT_EQ(reply, "B:queued " + std::to_string(i));
    } catch (const std::system_error& e) {
      ++lost;
      if (lost == 1) std::cout << "first lost request: " << e.what() << "\n";
    }
  }
  held.close_write();
  EXPECT_EQ(held.read_to_end_string(), "A:held");
  EXPECT_EQ(a.wait(), 0) << a.err();
  return lost;
}

TEST(RollingRestart, QueuedConnectionsMoveToTheOtherInstanceWithMigrateReq) {
  constexpr int kQueued = 16;
  int lost = -1;
  const std::optional<int> host = migrate_req();
  const auto why_not = with_migrate_req(true, [&] { lost = queued_requests_lost(kQueued); });
  if (why_not) GTEST_SKIP() << *why_not;
  EXPECT_EQ(migrate_req(), host) << "the host's setting must never change";
  RecordProperty("lost", lost);
  std::cout << "tcp_migrate_req=1: " << lost << " of " << kQueued << " queued requests lost\n";
  EXPECT_EQ(lost, 0);
}

TEST(RollingRestart, QueuedConnectionsAreResetWithoutMigrateReq) {
  // The same restart without the setting: what it protects against.
  constexpr int kQueued = 16;
  int lost = -1;
  const auto why_not = with_migrate_req(false, [&] { lost = queued_requests_lost(kQueued); });
  if (why_not) GTEST_SKIP() << *why_not;
  RecordProperty("lost", lost);
  std::cout << "tcp_migrate_req=0: " << lost << " of " << kQueued << " queued requests lost\n";
  EXPECT_EQ(lost, kQueued);
}

// Requests from several client threads at once, until `total` have been made or the time is up;
// counts those that failed, and among them those that did not fail with a reset. progress() lets
// the test wait for a number of them to be done.
class Load {
 public:
  Load(std::uint16_t port, int threads, int total, std::chrono::milliseconds limit)
      : total_(total), until_(std::chrono::steady_clock::now() + limit) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, port] { run(port); });
  }
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  Load(Load&&) = delete;
  Load& operator=(Load&&) = delete;
  ~Load() { finish(); }

  // Waits until `count` requests are done (false if the load ended first or after kPatience).
  bool progress(int count) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, test::kPatience, [&] { return done_ >= count || ended_ > 0; }) &&
           done_ >= count;
  }
  void finish() {
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  [[nodiscard]] int done() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return done_;
  }
  [[nodiscard]] int failed() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return failed_;
  }
  [[nodiscard]] int failed_connecting() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return failed_connecting_;
  }
  [[nodiscard]] std::string first_failure() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return first_failure_;
  }
  // Failures of another kind than a reset: a wrong or missing reply, a refusal, a timeout.
  [[nodiscard]] int not_reset() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return not_reset_;
  }
  [[nodiscard]] std::string first_not_reset() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return first_not_reset_;
  }

 private:
  void run(std::uint16_t port) {
    for (;;) {
      const int i = next_.fetch_add(1);
      if (i >= total_ || std::chrono::steady_clock::now() >= until_) break;
      const std::string message = "request " + std::to_string(i);
      std::string failure;
      bool connected = false;
      bool reset = false;
      try {
        Connection connection = connect("127.0.0.1", port, test::kPatience);
        connected = true;
        connection.set_timeout(test::kPatience);
        connection.write_all(message);
        connection.close_write();
        const std::string reply = connection.read_to_end_string();
        if (reply != message) {
          failure = "reply '";
          failure += reply;
          failure += "' to '";
          failure += message;
          failure += "'";
        }
      } catch (const std::system_error& e) {
        failure = e.what();
        reset = test::is_reset(e.code());
      }
      const std::lock_guard<std::mutex> lock(mutex_);
      ++done_;
      if (!failure.empty()) {
        ++(connected ? failed_ : failed_connecting_);
        if (first_failure_.empty()) first_failure_ = failure;
        if (!reset && not_reset_++ == 0) first_not_reset_ = failure;
      }
      changed_.notify_all();
    }
    const std::lock_guard<std::mutex> lock(mutex_);
    ++ended_;
    changed_.notify_all();
  }

  const int total_;
  const std::chrono::steady_clock::time_point until_;
  std::atomic<int> next_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
  int done_ = 0;
  int failed_ = 0;
  int failed_connecting_ = 0;
  int not_reset_ = 0;
  int ended_ = 0;
  std::string first_failure_;
  std::string first_not_reset_;
  std::vector<std::thread> threads_;
};

constexpr int kRequests = 3000;
constexpr int kClients = 8;

// Requests that failed once connected (the kernel had queued them), and while connecting; of
// all these, the ones that failed otherwise than with a reset, and the first such failure.
struct Failures {
  int connected = -1;
  int connecting = -1;
  int not_reset = -1;
  std::string first_not_reset;
};

// A rolling restart under load: two --reuseport instances; each in turn gets SIGTERM and a
// replacement joins the port, while client threads keep making requests. Every request must
// have been made.
Failures rolling_restart_failures(const std::vector<std::string>& server_args) {
  std::vector<std::string> first_args{"--reuseport", "--quiet", "--prefix", ""};
  first_args.insert(first_args.end(), server_args.begin(), server_args.end());
  auto first = std::make_unique<ServerProcess>(first_args);
  const std::string port = std::to_string(first->port());
  std::vector<std::string> args = first_args;
  args.insert(args.end(), {"--port", port});
  auto second = std::make_unique<FixedPortServer>(args);
  EXPECT_TRUE(second->ready()) << second->err();

  Load load(first->port(), kClients, kRequests, 15s);
  // The first instance goes, a replacement comes; then the same for the second.
  EXPECT_TRUE(load.progress(kRequests / 4));
  first->signal(SIGTERM);
  const FixedPortServer replacement(args);
  EXPECT_TRUE(replacement.ready()) << replacement.err();
  EXPECT_EQ(first->wait(), 0) << first->err();
  EXPECT_TRUE(load.progress(kRequests / 2));
  second->signal(SIGTERM);
  const FixedPortServer second_replacement(args);
  EXPECT_TRUE(second_replacement.ready()) << second_replacement.err();
  EXPECT_EQ(second->wait(), 0) << second->err();
  load.finish();
  EXPECT_EQ(load.done(), kRequests) << "the load ran out of time";
  std::cout << "failed after connecting " << load.failed() << ", while connecting "
            << load.failed_connecting() << "; first failure: " << load.first_failure() << "\n";
  return {load.failed(), load.failed_connecting(), load.not_reset(), load.first_not_reset()};
}

TEST(RollingRestart, UnderLoadNoRequestFailsWithMigrateReq) {
  Failures failed;
  const std::optional<int> host = migrate_req();
  const auto why_not = with_migrate_req(true, [&] {
    failed = rolling_restart_failures({"--workers", "2"});
  });
  if (why_not) GTEST_SKIP() << *why_not;
  EXPECT_EQ(migrate_req(), host) << "the host's setting must never change";
  RecordProperty("failed", failed.connected + failed.connecting);
  std::cout << "tcp_migrate_req=1: " << failed.connected + failed.connecting << " of " << kRequests
            << " requests failed\n";
  EXPECT_EQ(failed.connected, 0);
  // Linux's own window: a handshake whose last ACK another CPU is processing at the instant of
  // the close finds its listener gone and is reset, not moved (inet_csk_reqsk_queue_add()).
  // Measured: one reset in about 140 runs of this test; more than one per stop is a regression.
  EXPECT_LE(failed.connecting, 2);
}

TEST(RollingRestart, UnderLoadWithoutMigrateReqTheFailuresAreResets) {
  // How many fail is not asserted: whether a connection is queued at the moment of the stop is a
  // matter of timing. How they fail is: what the missing setting costs is the stopping
  // instance's queued connections, reset by the kernel, and nothing else (no wrong or missing
  // reply, no refusal, no timeout).
  Failures failed;
  const auto why_not = with_migrate_req(false, [&] {
    failed = rolling_restart_failures({"--workers", "2"});
  });
  if (why_not) GTEST_SKIP() << *why_not;
  RecordProperty("failed", failed.connected + failed.connecting);
  std::cout << "tcp_migrate_req=0: " << failed.connected + failed.connecting << " of " << kRequests
            << " requests failed\n";
  EXPECT_EQ(failed.not_reset, 0) << "first: " << failed.first_not_reset;
}

// Drains instance one of two under load through HAProxy; returns the failed requests.
// -1 when the setup itself failed (reported as a test failure).
int haproxy_drain_failures(const std::string& haproxy, const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"--prefix", "", "--quiet"};
  args.insert(args.end(), flags.begin(), flags.end());
  MeteredServer one(args);
  MeteredServer two(args);
  if (one.metrics_port() == 0 || two.metrics_port() == 0) {
    ADD_FAILURE() << "no metrics line: " << one.out() << two.out();
    return -1;
  }
  // As in scaling_test: the frontend socket is bound here and inherited as "bind fd@N".
  const Listener frontend = Listener::bind("127.0.0.1", 0);
  const Fd inherited(::dup(frontend.fd()));
  test::ScratchDir dir;
  const std::string config = dir.file("haproxy.cfg");
  std::ofstream(config) << test::haproxy_config(
      "fd@" + std::to_string(inherited.get()),
      {{one.port(), one.metrics_port()}, {two.port(), two.metrics_port()}});
  const test::RunResult check = test::run({haproxy, "-c", "-f", config});
  if (!inherited.valid() || check.status != 0) {
    ADD_FAILURE() << "haproxy -c: " << check.out << check.err;
    return -1;
  }
  Child proxy({haproxy, "-db", "-f", config});

  Load load(frontend.address().port(), kClients, kRequests, 15s);
  EXPECT_TRUE(load.progress(kRequests / 3));
  one.signal(SIGTERM);
  EXPECT_TRUE(proxy.wait_stderr("s1 is DOWN")) << proxy.err();
  EXPECT_EQ(one.wait(), 0) << one.err();
  load.finish();
  EXPECT_EQ(load.done(), kRequests) << "the load ran out of time";
  const int failed = load.failed() + load.failed_connecting();
  ::testing::Test::RecordProperty("failed", failed);
  std::cout << "through HAProxy: " << failed << " of " << kRequests
            << " requests failed; first failure: " << load.first_failure() << "\n";
  return failed;
}

TEST(HAProxyDrain, WithADrainDelayNoRequestIsLost) {
  const std::optional<std::string> haproxy = test::installed("haproxy");
  if (!haproxy) GTEST_SKIP() << "haproxy is not installed (apt-get install haproxy)";
  // /health says 503 at the signal; the instance accepts for 1 s more, ten check intervals,
  // while HAProxy takes it out: nothing is handed to it once it stops accepting.
  EXPECT_EQ(haproxy_drain_failures(*haproxy, {"--drain-delay", "1"}), 0);
}

TEST(HAProxyDrain, WithoutADrainDelayTheLossIsBounded) {
  const std::optional<std::string> haproxy = test::installed("haproxy");
  if (!haproxy) GTEST_SKIP() << "haproxy is not installed (apt-get install haproxy)";
  // Stopping at the signal itself, before HAProxy has seen the 503, resets what HAProxy had just
  // handed to the instance's backlog, and HAProxy cannot replay a forwarded request in TCP mode.
  // Each client thread has one request outstanding at a time, which bounds the loss. Measured:
  // 0 in 35 of 40 runs, 1 or 2 in 5.
  EXPECT_LE(haproxy_drain_failures(*haproxy, {}), kClients);
}

}  // namespace
}  // namespace sockecho
