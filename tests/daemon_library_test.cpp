// sockecho::Daemon, the library type sockecho-server is: run in this process with options a
// library user sets, its ready lines, its stop, its errors, and the one memory budget it gives
// request buffers and background jobs together.
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "sockecho/client.hpp"
#include "sockecho/daemon.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

// A Daemon run on a thread of its own; the lines it says are kept in order. The destructor
// stops it and joins the thread.
class DaemonThread {
 public:
  explicit DaemonThread(DaemonOptions options) : daemon_(std::move(options)) {
    thread_ = std::thread([this] {
      daemon_.run([this](const std::string& line) {
        const std::lock_guard<std::mutex> lock(mutex_);
        lines_.push_back(line);
        said_.notify_all();
      });
    });
  }
  DaemonThread(const DaemonThread&) = delete;
  DaemonThread& operator=(const DaemonThread&) = delete;
  DaemonThread(DaemonThread&&) = delete;
  DaemonThread& operator=(DaemonThread&&) = delete;
  ~DaemonThread() { stop(); }

  // The next line it says, within kPatience.
  std::optional<std::string> line() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!said_.wait_for(lock, test::kPatience, [this] { return !lines_.empty(); })) {
      return std::nullopt;
    }
    std::string line = std::move(lines_.front());
    lines_.pop_front();
    return line;
  }
  // The port of its ready line.
  std::uint16_t port() {
    const std::optional<std::string> ready = line();
    return ready ? test::port_of(*ready) : 0;
  }
  void stop() {
    daemon_.stop();
    if (thread_.joinable()) thread_.join();
  }
  Daemon& daemon() { return daemon_; }

 private:
  Daemon daemon_;
  std::mutex mutex_;
  std::condition_variable said_;
  std::deque<std::string> lines_;
  std::thread thread_;
};

DaemonOptions quiet_on_a_free_port() {
  DaemonOptions options;
  options.port = 0;
  options.log_fd = -1;  // no log lines
  options.socket_activation = false;
  return options;
}

TEST(DaemonLibrary, ServesAHandlerOfItsOwnAndStopsWhenAsked) {
  DaemonOptions options = quiet_on_a_free_port();
  options.handler = [](const Request& request, Reply& reply) {
    reply.append("got " + std::string(request.bytes()));
  };
  DaemonThread daemon(std::move(options));
  const std::uint16_t port = daemon.port();
  ASSERT_NE(port, 0);
  EXPECT_EQ(daemon.daemon().name(), "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(request("127.0.0.1", port, "x"), "got x");
  daemon.stop();
  EXPECT_EQ(daemon.daemon().stats().accepted, 1U);
  EXPECT_EQ(daemon.daemon().stats().count(Outcome::ok), 1U);
}

TEST(DaemonLibrary, TheDocumentsLineModeAndItsMetricsListener) {
  DaemonOptions options = quiet_on_a_free_port();
  options.mode = Mode::line;
  options.metrics = Endpoint{"127.0.0.1", 0};
  DaemonThread daemon(std::move(options));
  const std::uint16_t port = daemon.port();
  const std::optional<std::string> metrics_line = daemon.line();
  ASSERT_TRUE(metrics_line);
  ASSERT_EQ(metrics_line->rfind("metrics on 127.0.0.1:", 0), 0U) << *metrics_line;
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  c.write_all("hi\n");
  c.close_write();
  EXPECT_EQ(c.read_to_end_string(), "connect\n" + test::kPrefix + "hi\n");
  // The connection is counted once the server has closed it, which may be just after the client
  // read its end: scraped again until it shows (bounded).
  std::string body;
  const auto counted = [&] {
    Connection scrape = connect("127.0.0.1", test::port_of(*metrics_line));
    scrape.set_timeout(test::kPatience);
    scrape.write_all("GET /metrics HTTP/1.0\r\n\r\n");
    body = test::body_of(scrape.read_to_end_string());
    return body.find("sockecho_connections_total{outcome=\"ok\"} 1\n") != std::string::npos;
  };
  EXPECT_TRUE(test::eventually(counted)) << body;
}

TEST(DaemonLibrary, AProgramThatCannotBeFoundIsAnOptionErrorNamingTheFlag) {
  DaemonOptions options = quiet_on_a_free_port();
  options.exec = {"sockecho-no-such-program"};
  try {
    const Daemon daemon(std::move(options));
    ADD_FAILURE() << "constructed";
  } catch (const OptionError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--exec: ", 0), 0U) << e.what();
  }
}

TEST(DaemonLibrary, APortInUseIsASystemError) {
  const Listener taken = Listener::bind("127.0.0.1", 0);
  DaemonOptions options = quiet_on_a_free_port();
  options.port = taken.address().port();
  EXPECT_THROW(Daemon{std::move(options)}, std::system_error);
}

// Background jobs, one at a time, each waiting at `gate` until the test ends; a queue of 20,
// and a memory budget of 4 MiB.
DaemonOptions gated_jobs_in_4_mib(const test::Gate& gate) {
  DaemonOptions options = quiet_on_a_free_port();
  options.exec = {"sh", "-c", R"(cat >/dev/null; exec flock -s "$0" true)", gate.path()};
  options.background = true;
  options.jobs = 1;
  options.queue = 20;
  options.limits.max_total_bytes = std::size_t{4} << 20;
  return options;
}

// Opens the gate when the test ends, however it ends, before the daemon it is declared after
// stops: a stop drains every accepted job, and the jobs wait at the gate.
struct OpenAtTheEnd {
  test::Gate& gate;
  OpenAtTheEnd(const OpenAtTheEnd&) = delete;
  OpenAtTheEnd& operator=(const OpenAtTheEnd&) = delete;
  OpenAtTheEnd(OpenAtTheEnd&&) = delete;
  OpenAtTheEnd& operator=(OpenAtTheEnd&&) = delete;
  ~OpenAtTheEnd() { gate.open(); }
};

// Whether `job` was accepted: false when it was answered busy, or reset because the budget had
// no room for its request's buffer (where a slow machine parks a request in the waiting room).
bool accepted_job(std::uint16_t port, const std::string& job) {
  try {
    return request("127.0.0.1", port, job).find("accepted ") != std::string::npos;
  } catch (const std::system_error& e) {
    EXPECT_TRUE(test::is_reset(e.code())) << e.what();
    return false;
  }
}

// Background jobs and request buffers share --max-total-bytes: a running job's request still
// counts, and what the jobs hold leaves no room for a large request.
TEST(DaemonLibrary, JobsAndRequestBuffersShareOneBudget) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  DaemonThread daemon(gated_jobs_in_4_mib(gate));
  const OpenAtTheEnd open_gate{gate};
  const std::uint16_t port = daemon.port();
  // Under 1 MiB: read by a worker at once, its request buffer is the worker's own and only the
  // job's copy is charged, so 4 MiB holds four. A request a slow machine parks in the waiting
  // room has a buffer of 1 MiB charged as well until it is answered, which leaves room for
  // three.
  const std::string job(std::size_t{1000} << 10, 'j');
  int accepted = 0;
  for (int i = 0; i < 6; ++i) accepted += accepted_job(port, job) ? 1 : 0;
  EXPECT_GE(accepted, 3);
  EXPECT_LE(accepted, 4) << "4 MiB holds four jobs of 1000 KiB, the running one included";
  // A 2 MiB request needs a buffer charged to the same budget, which the jobs have spent.
  try {
    (void)request("127.0.0.1", port, std::string(std::size_t{2} << 20, 'r'));
    ADD_FAILURE() << "a request the budget has no room for was answered";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(test::is_reset(e.code())) << e.what();
  }
  gate.open();
  daemon.stop();
  EXPECT_GE(daemon.daemon().stats().count(Outcome::too_large), 1U);
}

// A large request parked in the waiting room leaves its buffer as a spare, still charged to
// the budget; a job that finds the budget spent frees it instead of being refused. (CI once saw
// a slow machine park a request and refuse a job for a spare nobody was using.)
TEST(DaemonLibrary, ASpareBufferLeftByTheWaitingRoomNeverRefusesAJob) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  DaemonOptions options = gated_jobs_in_4_mib(gate);
  options.metrics = Endpoint{"127.0.0.1", 0};
  DaemonThread daemon(std::move(options));
  const OpenAtTheEnd open_gate{gate};
  const std::uint16_t port = daemon.port();
  const std::optional<std::string> metrics_line = daemon.line();
  ASSERT_TRUE(metrics_line);
  const auto waiting_now = [&](int count) {
    Connection scrape = connect("127.0.0.1", test::port_of(*metrics_line));
    scrape.set_timeout(test::kPatience);
    scrape.write_all("GET /metrics HTTP/1.0\r\n\r\n");
    return test::body_of(scrape.read_to_end_string())
               .find("sockecho_connections_waiting " + std::to_string(count) + "\n") !=
           std::string::npos;
  };
  {
    // Half of a first job of 1000 KiB, then (once the room holds it) the rest: its buffer grows
    // to 1 MiB in the room, and is kept as a spare once the job is acknowledged.
    const std::string first(std::size_t{1000} << 10, 'f');
    Connection c = connect("127.0.0.1", port);
    c.set_timeout(test::kPatience);
    c.write_all(std::string_view(first).substr(0, first.size() / 2));
    ASSERT_TRUE(test::eventually([&] { return waiting_now(1); }));
    c.write_all(std::string_view(first).substr(first.size() / 2));
    c.close_write();
    ASSERT_NE(c.read_to_end_string().find("accepted "), std::string::npos);
  }
  // Then jobs of 300 KiB until one is refused. Of the 4,096 KiB, the first job holds 1,000:
  // room for 10 more, or 8 when the last one's request waits in the room with a 512 KiB buffer
  // of its own. Were the 1,024 KiB spare kept against them: 6, or 5.
  const std::string job(std::size_t{300} << 10, 'j');
  int accepted = 0;
  while (accepted < 20 && accepted_job(port, job)) ++accepted;
  EXPECT_GE(accepted, 8) << "the spare is freed for the jobs";
  EXPECT_LE(accepted, 10);
}

}  // namespace
}  // namespace sockecho
