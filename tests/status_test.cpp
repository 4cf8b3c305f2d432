// The status listener: the reply line's grammar, the request's forms, and a StatusListener over
// loopback answering about a real JobQueue's jobs, counted and logged by verb and outcome.
#include "sockecho/status.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/jobs.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

WallTime at_ms(long long ms) { return WallTime(std::chrono::milliseconds(ms)); }

TEST(StatusLine, AQueuedJobHasNoRunFields) {
  Job job;
  job.id = "abc";
  job.accepted = at_ms(1000);
  EXPECT_EQ(format_status(job, at_ms(1250)), "queued id=abc attempts=0 queued_ms=250\n");
}

TEST(StatusLine, ARunningJobsDurationsRunToNow) {
  Job job;
  job.id = "abc";
  job.state = JobState::running;
  job.attempts = 1;
  job.accepted = at_ms(1000);
  job.first_start = at_ms(1100);
  job.run_start = at_ms(1100);
  EXPECT_EQ(format_status(job, at_ms(1600)),
            "running id=abc attempts=1 queued_ms=100 run_ms=500 output_bytes=0 stderr_bytes=0\n");
}

TEST(StatusLine, AnEndedJobSaysHowInFieldOrder) {
  Job job;
  job.id = "x-_9";
  job.state = JobState::ended;
  job.end = JobEnd::failed;
  job.attempts = 5;
  job.accepted = at_ms(0);
  job.first_start = at_ms(10);
  job.run_start = at_ms(100);
  job.run_end = at_ms(130);
  job.signal = 9;
  job.reason = "interrupted";
  job.output_bytes = 7;
  job.stderr_bytes = 3;
  EXPECT_EQ(format_status(job, at_ms(99999)),
            "failed id=x-_9 attempts=5 signal=SIGKILL reason=interrupted queued_ms=10 run_ms=30 "
            "output_bytes=7 stderr_bytes=3\n");
  job.signal.reset();
  job.reason.clear();
  job.exit_code = 75;
  job.end = JobEnd::ok;
  EXPECT_EQ(format_status(job, at_ms(99999)),
            "ok id=x-_9 attempts=5 exit=75 queued_ms=10 run_ms=30 output_bytes=7 stderr_bytes=3\n");
}

TEST(StatusLine, AnUnknownIdIsNeverMistakenForAQueuedOne) {
  EXPECT_EQ(format_unknown("nope"), "unknown id=nope attempts=0 queued_ms=0\n");
}

TEST(StatusLine, JobIdsAreOneToSixtyFourUrlSafeCharacters) {
  EXPECT_TRUE(valid_job_id("a"));
  EXPECT_TRUE(valid_job_id(new_job_id()));
  EXPECT_TRUE(valid_job_id(std::string(64, 'Z')));
  EXPECT_FALSE(valid_job_id(""));
  EXPECT_FALSE(valid_job_id(std::string(65, 'Z')));
  EXPECT_FALSE(valid_job_id("a b"));
  EXPECT_FALSE(valid_job_id("a/b"));
  EXPECT_FALSE(valid_job_id("a.b"));
}

// A job queue whose jobs print their input, held at a gate, with a status listener on loopback.
class StatusListenerTest : public ::testing::Test {
 protected:
  StatusListenerTest() : gate_(dir_.file("gate")) {
    JobOptions options;
    options.argv = {"sh", "-c", R"(cat; : > "$0/began"; flock -s "$0/gate" true; [ -e "$0/ok" ])",
                    dir_.path()};
    options.jobs = 1;
    options.queue = 8;
    options.output_is_result = true;
    jobs_ = std::make_unique<JobQueue>(std::move(options));
    StatusOptions status;
    status.timeout = 2s;
    status.request_timeout = 2s;
    status.log = Logger(log_.write.get(), LogLevel::normal);
    listener_ = std::make_unique<StatusListener>(Listener::bind("127.0.0.1", 0), *jobs_, status);
  }
  ~StatusListenerTest() override {
    gate_.open();
    listener_.reset();
    jobs_.reset();
  }
  std::string ask(std::string_view request) {
    return sockecho::request("127.0.0.1", listener_->address().port(), request);
  }
  std::string ended(const std::string& id) {
    std::string reply;
    (void)test::eventually([&] {
      reply = ask("status " + id);
      return reply.rfind("ok ", 0) == 0 || reply.rfind("failed ", 0) == 0;
    });
    return reply;
  }
  // A request is counted once its connection has ended, a moment after its client read the
  // reply: the count `verb` and `outcome` reach within kPatience (what it is if they never do).
  std::uint64_t counted(std::string_view verb, std::string_view outcome, std::uint64_t want) {
    std::uint64_t seen = 0;
    (void)test::eventually([&] {
      seen = count(verb, outcome);
      return seen == want;
    });
    return seen;
  }
  std::uint64_t count(std::string_view verb, std::string_view outcome) {
    Exposition out;
    listener_->collect(out);
    const std::string text = out.take();
    const std::string sample = "sockecho_status_requests_total{verb=\"" + std::string(verb) +
                               "\",outcome=\"" + std::string(outcome) + "\"} ";
    const std::size_t at = text.find(sample);
    if (at == std::string::npos) return ~std::uint64_t{0};
    return std::stoull(text.substr(at + sample.size()));
  }

  test::ScratchDir dir_;
  test::Gate gate_;
  test::Pipe log_ = test::make_pipe();
  std::unique_ptr<JobQueue> jobs_;
  std::unique_ptr<StatusListener> listener_;
};

TEST_F(StatusListenerTest, StatusThenResultOfAJob) {
  const std::string id = jobs_->submit("hello", {}).value_or("");
  ASSERT_FALSE(id.empty());
  const std::string running = ask("status " + id);
  EXPECT_TRUE(running.rfind("running id=" + id + " attempts=1 queued_ms=", 0) == 0 ||
              running.rfind("queued id=" + id + " attempts=0 queued_ms=", 0) == 0)
      << running;
  const std::string early = ask("result " + id + "\n");
  EXPECT_EQ(early.find('\n'), early.size() - 1) << "before its end, the line alone: " << early;
  std::ofstream(dir_.file("ok")) << "";
  gate_.open();
  const std::string done = ended(id);
  EXPECT_EQ(done.rfind("ok id=" + id + " attempts=1 exit=0 queued_ms=", 0), 0U) << done;
  EXPECT_NE(done.find(" output_bytes=5 stderr_bytes=0\n"), std::string::npos) << done;
  const std::string result = ask("result " + id + "\r\n");
  EXPECT_EQ(result, done.substr(0, done.find('\n') + 1) + "hello") << "the line, then stdout";
  EXPECT_EQ(counted("result", "ok", 2), 2U) << "both results, the early one too";
}

TEST_F(StatusListenerTest, AnUnknownIdAndMalformedRequestsAreAnsweredAndTheListenerGoesOn) {
  EXPECT_EQ(ask("status neverissued"), "unknown id=neverissued attempts=0 queued_ms=0\n");
  for (const std::string& bad :
       std::vector<std::string>{"status", "status ", "status a/b", "fetch abc", "STATUS abc",
                                "status abc def", "", "status " + std::string(65, 'a')}) {
    const std::string reply = ask(bad);
    EXPECT_EQ(reply.rfind("error ", 0), 0U) << "'" << bad << "': " << reply;
    EXPECT_NE(reply.find("status ID"), std::string::npos) << "it names the accepted forms";
  }
  EXPECT_EQ(ask("cancel neverissued"), "unknown id=neverissued attempts=0 queued_ms=0\n");
  EXPECT_EQ(ask("retry neverissued"), "unknown id=neverissued attempts=0 queued_ms=0\n");
  EXPECT_EQ(counted("status", "unknown", 1), 1U);
  EXPECT_EQ(counted("invalid", "error", 4), 4U);  // no verb, or an unknown one
  EXPECT_EQ(counted("status", "error", 4), 4U);   // a known verb with no valid ID
}

TEST_F(StatusListenerTest, ARequestOverOneHundredBytesIsReset) {
  try {
    const std::string reply = ask("status " + std::string(200, 'a'));
    ADD_FAILURE() << "answered: " << reply;
  } catch (const std::system_error& e) {
    EXPECT_TRUE(test::is_reset(e.code())) << e.what();
  }
  EXPECT_EQ(counted("invalid", "reset", 1), 1U);
  EXPECT_EQ(ask("status abc"), "unknown id=abc attempts=0 queued_ms=0\n") << "and it goes on";
}

TEST_F(StatusListenerTest, CancelAnswersOnceTheJobHasEndedCancelled) {
  const std::string running = jobs_->submit("one", {}).value_or("");
  const std::string queued = jobs_->submit("two", {}).value_or("");
  // Its output is taken before it waits at the gate.
  ASSERT_TRUE(test::eventually([&] { return test::exists(dir_.file("began")); }));
  const std::string second = ask("cancel " + queued);
  EXPECT_EQ(second, "cancelled id=" + queued +
                        " attempts=0 queued_ms=" + second.substr(second.find("queued_ms=") + 10));
  const std::string first = ask("cancel " + running);
  EXPECT_EQ(first.rfind("cancelled id=" + running + " attempts=1 ", 0), 0U) << first;
  EXPECT_EQ(ask("result " + running).substr(ask("result " + running).find('\n') + 1), "one")
      << "its output so far";
  EXPECT_EQ(counted("cancel", "ok", 2), 2U);
}

TEST_F(StatusListenerTest, RetryQueuesAFailedJobAgain) {
  const std::string id = jobs_->submit("x", {}).value_or("");
  gate_.open();
  const std::string failed = ended(id);
  ASSERT_EQ(failed.rfind("failed id=" + id + " attempts=1 exit=1 ", 0), 0U) << failed;
  std::ofstream(dir_.file("ok")) << "";
  const std::string retried = ask("retry " + id);
  EXPECT_TRUE(retried.rfind("queued id=" + id + " attempts=0 ", 0) == 0 ||
              retried.rfind("running id=" + id + " attempts=1 ", 0) == 0 ||
              retried.rfind("ok id=" + id + " attempts=1 ", 0) == 0)
      << retried;
  EXPECT_EQ(ended(id).rfind("ok id=" + id + " attempts=1 exit=0 ", 0), 0U);
  EXPECT_EQ(ask("retry " + id).rfind("ok id=", 0), 0U) << "an ok job is left as it is";
}

TEST_F(StatusListenerTest, EveryRequestIsOneLogLine) {
  (void)ask("status abc");
  (void)ask("bogus");
  listener_.reset();
  log_.write.reset();
  const std::string log = test::read_all(log_.read.get());
  EXPECT_NE(log.find(" status peer=127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find(" verb=status outcome=unknown\n"), std::string::npos) << log;
  EXPECT_NE(log.find(" verb=invalid outcome=error\n"), std::string::npos) << log;
  EXPECT_EQ(log.find(" conn "), std::string::npos) << "no connection lines of its own";
}

}  // namespace
}  // namespace sockecho
