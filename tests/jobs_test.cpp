// JobQueue and background_handler: acknowledged at once, run later, bounded, drained on stop,
// and killed when abandoned.
#include "sockecho/jobs.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// A scratch directory the jobs write into, removed with everything in it.
class Scratch {
 public:
  Scratch() {
    std::string name = "/tmp/sockecho-jobs-XXXXXX";
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = name;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&&) = delete;
  Scratch& operator=(Scratch&&) = delete;
  ~Scratch() {
    const std::string command = "rm -rf '" + path_ + "'";
    (void)std::system(command.c_str());  // NOLINT(cert-env33-c): the test's own scratch directory
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

template <typename Predicate>
bool eventually(Predicate done) {
  const auto until = Clock::now() + test::kPatience;
  while (!done() && Clock::now() < until) std::this_thread::yield();
  return done();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A job that records its id and input in DIR/ID, once DIR/go exists (or at once without a gate).
JobOptions gated_jobs(const Scratch& dir, unsigned jobs, std::size_t queue) {
  JobOptions options;
  options.argv = {"sh", "-c",
                  R"(while [ ! -e "$0/go" ]; do sleep 0.01; done; cat > "$0/$SOCKECHO_JOB_ID")",
                  dir.path()};
  options.jobs = jobs;
  options.queue = queue;
  return options;
}

void open_gate(const Scratch& dir) { std::ofstream(dir.file("go")).put('\n'); }

TEST(JobQueue, JobsRunLaterWithTheirInputAndUniqueIds) {
  const Scratch dir;
  JobQueue queue(gated_jobs(dir, 2, 16));
  std::set<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    const std::optional<std::string> id = queue.submit("job " + std::to_string(i), {});
    ASSERT_TRUE(id);
    ids.insert(*id);
  }
  EXPECT_EQ(ids.size(), 10U) << "ids are unique";
  EXPECT_EQ(queue.stats().accepted, 10U);
  // Nothing has finished: every job waits at its gate.
  for (const std::string& id : ids) EXPECT_FALSE(exists(dir.file(id)));
  open_gate(dir);
  queue.drain();
  std::set<std::string> inputs;
  for (const std::string& id : ids) inputs.insert(read_file(dir.file(id)));
  EXPECT_EQ(inputs.size(), 10U);
  EXPECT_EQ(inputs.count("job 7"), 1U);
  EXPECT_EQ(queue.stats().ok, 10U);
}

TEST(JobQueue, AFullQueueRefusesAndDrainingRefusesToo) {
  const Scratch dir;
  JobQueue queue(gated_jobs(dir, 1, 2));
  // One running and two waiting fill it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(queue.submit("x", {})) << i;
  EXPECT_FALSE(queue.submit("x", {}));
  EXPECT_EQ(queue.stats().busy, 1U);
  open_gate(dir);
  queue.drain();
  EXPECT_EQ(queue.stats().ok, 3U);
  EXPECT_FALSE(queue.submit("after the stop", {}));
}

TEST(JobQueue, QueuedBytesAreBounded) {
  const Scratch dir;
  JobOptions options = gated_jobs(dir, 1, 100);
  options.max_queued_bytes = 10;
  JobQueue queue(std::move(options));
  ASSERT_TRUE(queue.submit("running", {}));
  ASSERT_TRUE(eventually([&] { return queue.stats().running == 1; }));
  ASSERT_TRUE(queue.submit("123456", {}));
  EXPECT_FALSE(queue.submit("123456", {})) << "6 + 6 bytes waiting is over 10";
  open_gate(dir);
  queue.drain();
}

TEST(JobQueue, AbandoningKillsTheRunningGroupsAndDropsTheWaiting) {
  const Scratch dir;
  JobOptions options;
  options.argv = {"sh", "-c", R"(sleep 100 & echo $! > "$0/$SOCKECHO_JOB_ID"; wait)", dir.path()};
  options.jobs = 1;
  options.queue = 4;
  JobQueue queue(std::move(options));
  const std::optional<std::string> first = queue.submit("", {});
  ASSERT_TRUE(first);
  ASSERT_TRUE(queue.submit("", {}));
  const std::string pid_file = dir.file(*first);
  ASSERT_TRUE(eventually([&] { return read_file(pid_file).find('\n') != std::string::npos; }));
  const int sleeper = std::stoi(read_file(pid_file));
  const auto [running, queued] = queue.abandon();
  EXPECT_EQ(running, 1U);
  EXPECT_EQ(queued, 1U);
  // Killed (SIGKILL to its group by abandon() itself): gone, or a zombie for init to reap.
  const auto state = [&] {
    std::ifstream status("/proc/" + std::to_string(sleeper) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("State:", 0) == 0) return line;
    }
    return std::string();
  };
  EXPECT_TRUE(eventually([&] { return state().empty() || state().find('Z') != std::string::npos; }))
      << state();
}

TEST(BackgroundHandler, AcknowledgesBeforeTheJobStartsAndSaysBusyWhenFull) {
  const Scratch dir;
  JobQueue queue(gated_jobs(dir, 1, 1));
  ServerOptions options;
  options.workers = 4;
  test::ServerThread server(options, echo_protocol(background_handler(queue, "> ")));
  const std::string first = request("127.0.0.1", server.port(), "one");
  const std::string second = request("127.0.0.1", server.port(), "two");
  ASSERT_EQ(first.rfind("> accepted ", 0), 0U) << first;
  ASSERT_EQ(second.rfind("> accepted ", 0), 0U) << second;
  EXPECT_EQ(first.back(), '\n');
  EXPECT_NE(first, second);
  // The queue is full (one running at its gate, one waiting): busy, a whole reply, refused.
  EXPECT_EQ(request("127.0.0.1", server.port(), "three"), "> busy\n");
  ASSERT_TRUE(server.wait_finished(3));
  const std::vector<ConnectionRecord> records = server.records();
  std::size_t refused = 0;
  for (const ConnectionRecord& r : records) {
    if (r.outcome == Outcome::refused) {
      ++refused;
      EXPECT_EQ(r.fields, "reason=busy");
      EXPECT_NE(format_record(r).find(" outcome=refused reason=busy"), std::string::npos);
    }
  }
  EXPECT_EQ(refused, 1U);
  // Acknowledged while the jobs had not run: their files appear only once the gate opens.
  const std::string id = first.substr(std::string("> accepted ").size(),
                                      first.size() - std::string("> accepted ").size() - 1);
  EXPECT_FALSE(exists(dir.file(id)));
  open_gate(dir);
  queue.drain();
  EXPECT_EQ(read_file(dir.file(id)), "one");
}

}  // namespace
}  // namespace sockecho
