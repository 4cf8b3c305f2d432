// A job's life in the JobQueue: retries by exit 75 with a doubling delay, the attempts limit,
// cancel and retry, results, and ended jobs kept for `keep` and at most `keep_max`, within the
// memory budget.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sockecho/jobs.hpp"
#include "sockecho/memory_budget.hpp"
#include "sockecho/spool.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// A job that runs `script` with sh, the scratch directory as $0.
JobOptions script_jobs(const test::ScratchDir& dir, const std::string& script) {
  JobOptions options;
  options.argv = {"sh", "-c", script, dir.path()};
  options.jobs = 2;
  options.queue = 16;
  options.retry_delay = 50ms;
  return options;
}

std::optional<Job> ended(JobQueue& queue, const std::string& id) {
  std::optional<Job> job;
  const bool done = test::eventually([&] {
    job = queue.find(id);
    return job && job->state == JobState::ended;
  });
  if (!done) return std::nullopt;
  return job;
}

// The lines of a file: one per run, as the job scripts write them.
std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(JobLife, ExitSeventyFiveIsRetriedAfterADelayThatDoubles) {
  const test::ScratchDir dir;
  // Each run writes its attempt and the time in milliseconds; the first two ask to be retried.
  JobOptions options =
      script_jobs(dir, R"sh(echo "$SOCKECHO_JOB_ATTEMPT $(date +%s%3N)" >> "$0/runs"; )sh"
                       R"([ "$SOCKECHO_JOB_ATTEMPT" -lt 3 ] && exit 75; echo done)");
  options.retry_delay = 200ms;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] {
    const std::optional<Job> job = queue.find(*id);
    return job && job->state == JobState::retrying;
  }));
  const std::optional<Job> retrying = queue.find(*id);
  EXPECT_EQ(retrying->attempts, 1U);
  EXPECT_EQ(retrying->exit_code, kRetryExit);
  ASSERT_TRUE(retrying->next_run);
  const std::optional<Job> job = ended(queue, *id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::ok);
  EXPECT_EQ(job->attempts, 3U);
  const std::vector<std::string> runs = lines_of(dir.file("runs"));
  ASSERT_EQ(runs.size(), 3U);
  std::vector<long long> at;
  at.reserve(runs.size());
  for (const std::string& run : runs) {
    at.push_back(std::stoll(run.substr(run.find(' ') + 1)));
  }
  // The delay is a lower bound, exact; the upper bound allows for a loaded machine.
  EXPECT_GE(at[1] - at[0], 200) << runs[0] << " / " << runs[1];
  EXPECT_LT(at[1] - at[0], 200 + 2000);
  EXPECT_GE(at[2] - at[1], 400) << "doubled at the second retry";
  EXPECT_LT(at[2] - at[1], 400 + 2000);
  EXPECT_EQ(queue.stats().count(JobEnd::ok), 1U);
}

TEST(JobLife, AJobThatAlwaysAsksToBeRetriedFailsWithExitSeventyFiveAfterMaxAttempts) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, R"(echo "$SOCKECHO_JOB_ATTEMPT" >> "$0/runs"; exit 75)");
  options.max_attempts = 3;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  const std::optional<Job> job = ended(queue, *id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::failed);
  EXPECT_EQ(job->exit_code, 75);
  EXPECT_EQ(job->attempts, 3U);
  EXPECT_EQ(lines_of(dir.file("runs")), (std::vector<std::string>{"1", "2", "3"}));
}

TEST(JobLife, MaxAttemptsOfOneNeverRetries) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, R"(echo run >> "$0/runs"; exit 75)");
  options.max_attempts = 1;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  const std::optional<Job> job = ended(queue, *id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::failed);
  EXPECT_EQ(lines_of(dir.file("runs")).size(), 1U);
}

TEST(JobLife, OtherExitsAreFinal) {
  const test::ScratchDir dir;
  JobQueue queue(script_jobs(dir, R"(echo run >> "$0/runs"; exit 74)"));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  const std::optional<Job> job = ended(queue, *id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::failed);
  EXPECT_EQ(job->exit_code, 74);
  EXPECT_EQ(lines_of(dir.file("runs")).size(), 1U);
}

TEST(JobLife, WithoutASpoolAStopRunsRetryingJobsAtOnce) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, R"(echo "$SOCKECHO_JOB_ATTEMPT" >> "$0/runs"; exit 75)");
  options.retry_delay = 3600s;  // never reached: the stop drops the delay
  options.max_attempts = 3;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] { return queue.stats().retrying == 1; }));
  const auto started = std::chrono::steady_clock::now();
  queue.drain();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  EXPECT_EQ(lines_of(dir.file("runs")), (std::vector<std::string>{"1", "2", "3"}))
      << "still up to max_attempts";
  const std::optional<Job> job = queue.find(*id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::failed);
}

TEST(JobLife, ARetryingJobStaysRetryingUntilItsNextRunStarts) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  // "x" asks to be retried once; "y" holds the one job thread at the gate.
  JobOptions options = script_jobs(
      dir, R"sh(read what; [ "$what" = x ] && [ "$SOCKECHO_JOB_ATTEMPT" = 1 ] && exit 75; )sh"
           R"sh(flock -s "$0/gate" true)sh");
  options.jobs = 1;
  JobQueue queue(std::move(options));
  const std::string x = queue.submit("x\n", {}).value_or("");
  ASSERT_TRUE(test::eventually([&] { return queue.stats().retrying == 1; }));
  const std::string y = queue.submit("y\n", {}).value_or("");
  ASSERT_TRUE(test::eventually([&] {
    const std::optional<Job> job = queue.find(y);
    return job && job->state == JobState::running;
  }));
  // Its delay (50 ms) passes while the thread is held: it waits for it, still retrying.
  ASSERT_TRUE(test::eventually([&] { return queue.stats().retrying == 0; }));
  const std::optional<Job> due = queue.find(x);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->state, JobState::retrying);
  EXPECT_EQ(due->attempts, 1U);
  gate.open();
  const std::optional<Job> done = ended(queue, x);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->end, JobEnd::ok);
  EXPECT_EQ(done->attempts, 2U);
}

TEST(JobLife, AResultIsTheStdoutOfAnEndedJobAndNothingBefore) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobQueue queue(
      script_jobs(dir, R"sh(echo "out $(cat)"; flock -s "$0/gate" true; echo err >&2)sh"));
  const std::optional<std::string> id = queue.submit("input", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] { return queue.stats().running == 1; }));
  const auto running = queue.result(*id);
  ASSERT_TRUE(running);
  EXPECT_EQ(running->first.state, JobState::running);
  EXPECT_EQ(running->second, "");
  gate.open();
  ASSERT_TRUE(ended(queue, *id));
  const auto done = queue.result(*id);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->second, "out input\n");
  EXPECT_EQ(done->first.output_bytes, 10U);
  EXPECT_EQ(done->first.stderr_bytes, 4U);
  EXPECT_FALSE(queue.result("never-issued"));
}

TEST(JobLife, ACancelledQueuedJobNeverRuns) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobOptions options =
      script_jobs(dir, R"(flock -s "$0/gate" true; echo x > "$0/$SOCKECHO_JOB_ID")");
  options.jobs = 1;
  JobQueue queue(std::move(options));
  const std::optional<std::string> first = queue.submit("", {});
  const std::optional<std::string> second = queue.submit("", {});
  ASSERT_TRUE(first && second);
  const std::optional<Job> cancelled = queue.cancel(*second);
  ASSERT_TRUE(cancelled);
  EXPECT_EQ(cancelled->state, JobState::ended);
  EXPECT_EQ(cancelled->end, JobEnd::cancelled);
  EXPECT_EQ(cancelled->attempts, 0U);
  gate.open();
  queue.drain();
  EXPECT_TRUE(test::exists(dir.file(*first)));
  EXPECT_FALSE(test::exists(dir.file(*second))) << "a cancelled job never runs";
  EXPECT_EQ(queue.stats().count(JobEnd::cancelled), 1U);
  EXPECT_FALSE(queue.cancel("never-issued"));
}

TEST(JobLife, ACancelledRetryingJobNeverRunsAgain) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, R"(echo run >> "$0/runs"; exit 75)");
  options.retry_delay = 300ms;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] { return queue.stats().retrying == 1; }));
  const std::optional<Job> job = queue.cancel(*id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::cancelled);
  EXPECT_EQ(queue.stats().retrying, 0U);
  std::this_thread::sleep_for(600ms);  // ok-sleep: twice its delay, to see it never runs again
  EXPECT_EQ(lines_of(dir.file("runs")).size(), 1U);
}

TEST(JobLife, CancellingARunningJobEndsItWithEverythingItStartedAndKeepsItsOutputSoFar) {
  const test::ScratchDir dir;
  // It prints, starts a grandchild in a session of its own that ignores nothing, and waits.
  JobQueue queue(script_jobs(dir, R"(echo begun; setsid sleep 300 & echo $! > "$0/grandchild"; )"
                                  R"(exec sleep 300)"));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] { return test::exists(dir.file("grandchild")); }));
  std::string pid_text;
  ASSERT_TRUE(test::eventually([&] {
    std::ifstream in(dir.file("grandchild"));
    return static_cast<bool>(std::getline(in, pid_text)) && !pid_text.empty();
  }));
  const pid_t grandchild = std::stoi(pid_text);
  ASSERT_TRUE(test::running(grandchild));
  const std::optional<Job> job = queue.cancel(*id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->state, JobState::ended) << "the answer comes once it has ended";
  EXPECT_EQ(job->end, JobEnd::cancelled);
  EXPECT_TRUE(test::eventually([&] { return !test::running(grandchild); }));
  const auto result = queue.result(*id);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->second, "begun\n");
  // An ended job is left as it is.
  const std::optional<Job> again = queue.cancel(*id);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->end, JobEnd::cancelled);
}

TEST(JobLife, AProgramThatIgnoresSigtermIsKilledAfterTheGrace) {
  const test::ScratchDir dir;
  JobOptions options =
      script_jobs(dir, R"(trap '' TERM; echo ready > "$0/ready"; while :; do sleep 0.05; done)");
  options.limits.grace = 300ms;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(test::eventually([&] { return test::exists(dir.file("ready")); }));
  const auto started = std::chrono::steady_clock::now();
  const std::optional<Job> job = queue.cancel(*id);
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(job);
  EXPECT_EQ(job->end, JobEnd::cancelled);
  EXPECT_GE(took, 300ms) << "SIGTERM first, SIGKILL only after the grace; signal "
                         << job->signal.value_or(0) << " exit " << job->exit_code.value_or(-1);
  EXPECT_LT(took, 300ms + 5s);
}

TEST(JobLife, RetryQueuesAFailedJobAgainFromAttemptZeroAndLeavesAnOkOneAlone) {
  const test::ScratchDir dir;
  // Fails until the file "fixed" exists.
  JobQueue queue(script_jobs(dir, R"sh(echo "$(cat)" >> "$0/runs"; [ -e "$0/fixed" ])sh"));
  const std::optional<std::string> id = queue.submit("work", {});
  ASSERT_TRUE(id);
  const std::optional<Job> failed = ended(queue, *id);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->end, JobEnd::failed);
  std::ofstream(dir.file("fixed")) << "";
  const std::optional<Job> retried = queue.retry(*id);
  ASSERT_TRUE(retried);
  EXPECT_NE(retried->state, JobState::ended);
  const std::optional<Job> ok = ended(queue, *id);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->end, JobEnd::ok);
  EXPECT_EQ(ok->attempts, 1U) << "attempts from 0 again";
  EXPECT_EQ(lines_of(dir.file("runs")), (std::vector<std::string>{"work", "work"}))
      << "the same input";
  const std::optional<Job> left = queue.retry(*id);
  ASSERT_TRUE(left);
  EXPECT_EQ(left->end, JobEnd::ok) << "an ok job is not run again";
  queue.drain();
  EXPECT_EQ(lines_of(dir.file("runs")).size(), 2U);
  EXPECT_FALSE(queue.retry("never-issued"));
}

TEST(JobLife, RetryCountsAgainstTheQueueLikeANewJob) {
  const test::ScratchDir dir;
  const test::Gate gate(dir.file("gate-ok"));  // holds the "ok" jobs
  JobOptions options =
      script_jobs(dir, R"(read what; flock -s "$0/gate-$what" true; [ "$what" = ok ])");
  options.jobs = 1;
  options.queue = 1;
  JobQueue queue(std::move(options));
  const std::optional<std::string> failing = queue.submit("fail\n", {});
  ASSERT_TRUE(failing);
  ASSERT_TRUE(ended(queue, *failing));
  ASSERT_TRUE(queue.submit("ok\n", {}));  // runs, held at the gate
  ASSERT_TRUE(test::eventually([&] { return queue.stats().running == 1; }));
  ASSERT_TRUE(queue.submit("ok\n", {}));  // the one queue slot
  const std::optional<Job> refused = queue.retry(*failing);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->state, JobState::ended) << "refused: left as it was";
  EXPECT_EQ(refused->end, JobEnd::failed);
  EXPECT_EQ(queue.stats().queued, 1U);
}

TEST(JobLife, EndedJobsAreKeptForKeepThenForgotten) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, "echo hello");
  options.keep = 500ms;
  JobQueue queue(std::move(options));
  const std::optional<std::string> id = queue.submit("", {});
  ASSERT_TRUE(id);
  const std::optional<Job> job = ended(queue, *id);
  ASSERT_TRUE(job);
  ASSERT_TRUE(job->run_end);
  const auto kept = queue.result(*id);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->second, "hello\n");
  ASSERT_TRUE(test::eventually([&] { return !queue.find(*id); }));
  const auto gone = std::chrono::system_clock::now();
  EXPECT_GE(gone - *job->run_end, 500ms) << "kept at least --keep from its end";
  EXPECT_EQ(queue.stats().kept, 0U);
}

TEST(JobLife, KeepMaxForgetsTheOldestFirst) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, "cat");
  options.jobs = 1;
  options.keep_max = 2;
  JobQueue queue(std::move(options));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const std::optional<std::string> id = queue.submit(std::to_string(i), {});
    ASSERT_TRUE(id);
    ASSERT_TRUE(ended(queue, *id));
    ids.push_back(*id);
  }
  EXPECT_FALSE(queue.find(ids[0])) << "the oldest is forgotten";
  EXPECT_TRUE(queue.find(ids[1]));
  EXPECT_TRUE(queue.find(ids[2]));
  EXPECT_EQ(queue.result(ids[2])->second, "2");
}

TEST(JobLife, KeptOutputsStayWithinTheBudgetTheOldestForgottenToMakeRoom) {
  const test::ScratchDir dir;
  JobOptions options = script_jobs(dir, "head -c 3000000 /dev/zero");
  options.jobs = 1;
  options.limits.max_output = 4 << 20;
  const auto budget = std::make_shared<MemoryBudget>(std::size_t{8} << 20);
  options.budget = budget;
  JobQueue queue(std::move(options));
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    const std::optional<std::string> id = queue.submit("", {});
    ASSERT_TRUE(id);
    const std::optional<Job> job = ended(queue, *id);
    ASSERT_TRUE(job);
    EXPECT_EQ(job->end, JobEnd::ok) << "room was made by forgetting the oldest";
    EXPECT_LE(budget->charged(), budget->limit());
    ids.push_back(*id);
  }
  EXPECT_FALSE(queue.find(ids[0]));
  EXPECT_FALSE(queue.find(ids[1]));
  EXPECT_FALSE(queue.find(ids[2]));
  ASSERT_TRUE(queue.find(ids[4]));
  EXPECT_EQ(queue.result(ids[4])->second.size(), 3000000U);
}

TEST(JobLife, RetryingJobsAndResultsSurviveARestartWithASpool) {
  const test::ScratchDir dir;
  const std::string spool_dir = dir.file("spool");
  std::string retrying;
  std::string done;
  {
    JobOptions options =
        script_jobs(dir, R"(read what; [ "$what" = retry ] && exit 75; echo "did $what")");
    options.spool = std::make_shared<Spool>(Spool::open(spool_dir));
    options.retry_delay = 3600s;
    JobQueue queue(std::move(options));
    retrying = queue.submit("retry\n", {}).value_or("");
    done = queue.submit("work\n", {}).value_or("");
    ASSERT_FALSE(retrying.empty() || done.empty());
    ASSERT_TRUE(ended(queue, done));
    ASSERT_TRUE(test::eventually([&] { return queue.stats().retrying == 1; }));
    queue.drain();
  }
  JobOptions options = script_jobs(dir, "echo again");
  options.spool = std::make_shared<Spool>(Spool::open(spool_dir));
  JobQueue queue(std::move(options));
  EXPECT_EQ(queue.found().retrying, 1U);
  EXPECT_EQ(queue.found().ended, 1U);
  const std::optional<Job> waiting = queue.find(retrying);
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->state, JobState::retrying) << "its delay kept across the restart";
  EXPECT_EQ(waiting->attempts, 1U);
  const auto result = queue.result(done);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->first.end, JobEnd::ok);
  EXPECT_EQ(result->second, "did work\n");
  EXPECT_TRUE(result->first.first_start);
}

// Jobs of two sources, held at a gate, then let run one at a time: the order they started in.
std::vector<std::string> start_order(bool turns) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobOptions options =
      script_jobs(dir, R"sh(read what; echo "$what" >> "$0/order"; flock -s "$0/gate" true)sh");
  options.jobs = 1;
  options.queue = 100;
  options.turns = turns;
  JobQueue queue(std::move(options));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(queue.submit("a\n", {}, "127.0.0.2").accepted());
  EXPECT_TRUE(test::eventually([&] { return queue.stats().running == 1; }));
  EXPECT_TRUE(queue.submit("b\n", {}, "127.0.0.3").accepted());
  EXPECT_TRUE(queue.submit("b\n", {}, "127.0.0.3").accepted());
  gate.open();
  queue.drain();
  return lines_of(dir.file("order"));
}

TEST(JobLife, QueuedJobsStartInTurnsBetweenSources) {
  const std::vector<std::string> order = start_order(true);
  ASSERT_EQ(order.size(), 22U);
  // The first a was running when the b's came; then one a, then b, in turn, while both wait.
  EXPECT_EQ(order[0], "a");
  EXPECT_EQ(order[1], "a");
  EXPECT_EQ(order[2], "b") << "at most --jobs (1) of the other source's jobs start before it";
  EXPECT_EQ(order[3], "a");
  EXPECT_EQ(order[4], "b");
}

TEST(JobLife, WithoutTurnsJobsStartInTheOrderTheyCame) {
  const std::vector<std::string> order = start_order(false);
  ASSERT_EQ(order.size(), 22U);
  EXPECT_EQ(order[20], "b");
  EXPECT_EQ(order[21], "b");
}

TEST(JobLife, MaxQueuedPerSourceRefusesOneSourcePastItsShareAndNoOther) {
  const test::ScratchDir dir;
  test::Gate gate(dir.file("gate"));
  JobOptions options = script_jobs(dir, R"sh(flock -s "$0/gate" true)sh");
  options.jobs = 1;
  options.max_queued_per_source = 3;
  JobQueue queue(std::move(options));
  ASSERT_TRUE(queue.submit("", {}, "127.0.0.2").accepted());  // runs: no longer queued
  ASSERT_TRUE(test::eventually([&] { return queue.stats().running == 1; }));
  std::vector<std::string> queued;
  for (int i = 0; i < 3; ++i) {
    const Submission s = queue.submit("", {}, "127.0.0.2");
    ASSERT_TRUE(s.accepted()) << i;
    queued.push_back(s.id);
  }
  const Submission over = queue.submit("", {}, "127.0.0.2");
  EXPECT_EQ(over.refused, "queued_per_source");
  EXPECT_TRUE(over.id.empty());
  EXPECT_TRUE(queue.submit("", {}, "127.0.0.3").accepted()) << "another source is not held back";
  EXPECT_EQ(queue.stats().queued_per_source, 1U);
  // A cancelled job gives its source's place back.
  ASSERT_TRUE(queue.cancel(queued[0]));
  EXPECT_TRUE(queue.submit("", {}, "127.0.0.2").accepted());
  gate.open();
}

TEST(JobLife, JobStatesAndEndsHaveTheirNames) {
  EXPECT_EQ(to_string(JobState::retrying), "retrying");
  EXPECT_EQ(to_string(JobEnd::cancelled), "cancelled");
  JobOptions options;
  options.argv = {"true"};
  options.max_attempts = 0;
  EXPECT_THROW(JobQueue{options}, std::invalid_argument);
}

}  // namespace
}  // namespace sockecho
