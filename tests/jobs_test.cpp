// JobQueue and background_handler: acknowledged at once, run later, bounded, drained on stop,
// and killed when abandoned.
#include "sockecho/jobs.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// A job that leaves its input in DIR/ID once the gate DIR/gate opens.
JobOptions gated_jobs(const test::ScratchDir& dir, unsigned jobs, std::size_t queue) {
  JobOptions options;
  options.argv = {"sh", "-c", R"(flock -s "$0/gate" true && cat > "$0/$SOCKECHO_JOB_ID")",
                  dir.path()};
  options.jobs = jobs;
  options.queue = queue;
  return options;
}

TEST(JobQueue, JobsRunLaterWithTheirInputAndUniqueIds) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
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
  for (const std::string& id : ids) EXPECT_FALSE(test::exists(dir.file(id)));
  gate.open();
  queue.drain();
  std::set<std::string> inputs;
  for (const std::string& id : ids) inputs.insert(dir.read(id));
  EXPECT_EQ(inputs.size(), 10U);
  EXPECT_EQ(inputs.count("job 7"), 1U);
  EXPECT_EQ(queue.stats().count(JobEnd::ok), 10U);
}

TEST(JobIds, AreUnguessable128BitIdsInTheUrlSafeAlphabet) {
  std::set<std::string> seen;
  std::array<int, 64> counts{};  // how often each character of the alphabet appears
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int i = 0; i < 2000; ++i) {
    const std::string id = new_job_id();
    ASSERT_EQ(id.size(), 22U) << id;
    for (std::size_t place = 0; place < id.size(); ++place) {
      const std::size_t at = alphabet.find(id[place]);
      ASSERT_NE(at, std::string::npos) << id;
      if (place < 21) ++counts.at(at);  // the last character holds the last 2 bits only
    }
    EXPECT_TRUE(seen.insert(id).second) << "repeated: " << id;
  }
  // 2000 x 21 full characters: about 656 of each; a counter or a clock would skew this badly.
  for (std::size_t c = 0; c < counts.size(); ++c) {
    EXPECT_GT(counts.at(c), 450) << alphabet[c];
    EXPECT_LT(counts.at(c), 900) << alphabet[c];
  }
}

TEST(JobQueue, AFullQueueRefusesAndDrainingRefusesToo) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobQueue queue(gated_jobs(dir, 1, 2));
  // One running and two waiting fill it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(queue.submit("x", {})) << i;
  EXPECT_FALSE(queue.submit("x", {}));
  EXPECT_EQ(queue.stats().busy, 1U);
  gate.open();
  queue.drain();
  EXPECT_EQ(queue.stats().count(JobEnd::ok), 3U);
  EXPECT_FALSE(queue.submit("after the stop", {}));
}

TEST(JobQueue, InputsAreChargedToTheBudgetWhileQueuedAndWhileRunning) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobOptions options = gated_jobs(dir, 1, 100);
  const auto budget = std::make_shared<MemoryBudget>(16);
  options.budget = budget;
  JobQueue queue(std::move(options));
  ASSERT_TRUE(queue.submit("running", {}));
  ASSERT_TRUE(test::eventually([&] { return queue.stats().running == 1; }));
  EXPECT_EQ(budget->charged(), 7U) << "a running job's input is still in memory";
  ASSERT_TRUE(queue.submit("123456", {}));
  EXPECT_FALSE(queue.submit("123456", {})) << "7 running + 6 + 6 waiting is over 16";
  EXPECT_EQ(queue.stats().busy, 1U);
  EXPECT_EQ(budget->charged(), 13U) << "a refused job charges nothing";
  gate.open();
  queue.drain();
  EXPECT_EQ(budget->charged(), 0U) << "every input is given back once its job ends";
}

TEST(JobQueue, AbandonedJobsGiveTheirInputsBack) {
  const test::ScratchDir dir;
  const test::Gate gate(dir.file("gate"));  // never opened
  JobOptions options = gated_jobs(dir, 1, 4);
  const auto budget = std::make_shared<MemoryBudget>(0);
  options.budget = budget;
  {
    JobQueue queue(std::move(options));
    ASSERT_TRUE(queue.submit("one", {}));
    ASSERT_TRUE(queue.submit("two", {}));
    EXPECT_EQ(budget->charged(), 6U);
    (void)queue.abandon();
  }
  EXPECT_EQ(budget->charged(), 0U);
}

TEST(JobQueue, AJobCanBeFoundByItsIdFromItsAcknowledgementToItsEnd) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobQueue queue(gated_jobs(dir, 1, 4));
  const std::optional<std::string> first = queue.submit("first", {});
  const std::optional<std::string> second = queue.submit("second", {});
  ASSERT_TRUE(first && second);
  ASSERT_TRUE(test::eventually([&] {
    const std::optional<Job> job = queue.find(*first);
    return job && job->state == JobState::running;
  }));
  const std::optional<Job> running = queue.find(*first);
  EXPECT_EQ(running->id, *first);
  EXPECT_EQ(running->attempts, 1U);
  EXPECT_EQ(running->input_bytes, 5U);
  const std::optional<Job> waiting = queue.find(*second);
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->state, JobState::queued);
  EXPECT_EQ(waiting->attempts, 0U);
  EXPECT_FALSE(queue.find("no such id"));
  gate.open();
  queue.drain();
  const std::optional<Job> ended = queue.find(*first);
  ASSERT_TRUE(ended) << "an ended job is kept";
  EXPECT_EQ(ended->state, JobState::ended);
  EXPECT_EQ(ended->end, JobEnd::ok);
  EXPECT_EQ(ended->exit_code, 0);
  EXPECT_EQ(to_string(JobState::running), "running");
}

TEST(JobQueue, AProgramThatCannotBeFoundIsRefusedAtTheStart) {
  JobOptions options;
  options.argv = {"sockecho-no-such-program"};
  EXPECT_THROW(JobQueue queue(std::move(options)), std::system_error);
}

TEST(JobQueue, AbandoningKillsTheRunningGroupsAndDropsTheWaiting) {
  const test::ScratchDir dir;
  const test::Gate gate(dir.file("gate"));  // never opened: what the job starts waits forever
  JobOptions options;
  options.argv = {"sh", "-c", R"(flock -s "$0/gate" true & echo $! > "$0/$SOCKECHO_JOB_ID"; wait)",
                  dir.path()};
  options.jobs = 1;
  options.queue = 4;
  JobQueue queue(std::move(options));
  const std::optional<std::string> first = queue.submit("", {});
  ASSERT_TRUE(first);
  ASSERT_TRUE(queue.submit("", {}));
  ASSERT_TRUE(test::eventually([&] { return dir.read(*first).find('\n') != std::string::npos; }));
  const int waiter = std::stoi(dir.read(*first));
  const auto [running, queued] = queue.abandon();
  EXPECT_EQ(running, 1U);
  EXPECT_EQ(queued, 1U);
  // Killed (SIGKILL to its group by abandon() itself): gone, or a zombie for init to reap.
  const auto state = [&] {
    std::ifstream status("/proc/" + std::to_string(waiter) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("State:", 0) == 0) return line;
    }
    return std::string();
  };
  EXPECT_TRUE(test::eventually([&] {
    return state().empty() || state().find('Z') != std::string::npos;
  })) << state();
}

TEST(BackgroundHandler, AcknowledgesBeforeTheJobStartsAndSaysBusyWhenFull) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
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
  EXPECT_FALSE(test::exists(dir.file(id)));
  gate.open();
  queue.drain();
  EXPECT_EQ(dir.read(id), "one");
}

}  // namespace
}  // namespace sockecho
