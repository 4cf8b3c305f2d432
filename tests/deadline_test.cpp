// Deadline: the idle limit and the absolute end of one connection; poll_until: the one wait.
#include "sockecho/deadline.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

TEST(Deadline, WithoutLimitsItNeverExpires) {
  const Deadline none;
  EXPECT_EQ(none.expiry(), Clock::time_point::max());
  EXPECT_FALSE(none.end_first());
  const Deadline zero(0ms);
  EXPECT_EQ(zero.expiry(), Clock::time_point::max());
  const Deadline negative(-5ms);
  EXPECT_EQ(negative.idle().count(), 0);
}

TEST(Deadline, IdleLimitCountsFromTheLastProgress) {
  const Clock::time_point start = Clock::now();
  Deadline d(1s, start);
  EXPECT_EQ(d.expiry(), start + 1s);
  d.progress(start + 400ms);
  EXPECT_EQ(d.expiry(), start + 1400ms);
  EXPECT_EQ(d.last_progress(), start + 400ms);
  d.set_idle(2s, start + 500ms);
  EXPECT_EQ(d.expiry(), start + 2500ms);
}

TEST(Deadline, TheEndIsNotExtendedByProgress) {
  const Clock::time_point start = Clock::now();
  Deadline d(1s, start);
  d.set_end(start + 1500ms);
  EXPECT_FALSE(d.end_first());
  d.progress(start + 900ms);  // idle would run out at 1.9 s, the end comes first
  EXPECT_EQ(d.expiry(), start + 1500ms);
  EXPECT_TRUE(d.end_first());
  d.set_end(Clock::time_point::max());
  EXPECT_EQ(d.expiry(), start + 1900ms);
}

TEST(Deadline, AnEndWithoutAnIdleLimit) {
  const Clock::time_point start = Clock::now();
  Deadline d(0ms, start);
  d.set_end(start + 3s);
  d.progress(start + 10s);
  EXPECT_EQ(d.expiry(), start + 3s);
  EXPECT_TRUE(d.end_first());
}

TEST(EndAfter, ALimitCountsFromItsStartAndZeroMeansNone) {
  const Clock::time_point start = Clock::now();
  EXPECT_EQ(end_after(1500ms, start), start + 1500ms);
  EXPECT_EQ(end_after(0ms, start), Clock::time_point::max());
  EXPECT_EQ(end_after(-5ms, start), Clock::time_point::max());
  // Without a start, the limit counts from now.
  const Clock::time_point before = Clock::now();
  const Clock::time_point end = end_after(2s);
  EXPECT_GE(end, before + 2s);
  EXPECT_LE(end, Clock::now() + 2s);
}

TEST(PollUntil, ReturnsZeroWhenTheTimeRunsOutAndNotBefore) {
  const test::Pipe pipe = test::make_pipe();
  pollfd fd{pipe.read.get(), POLLIN, 0};
  const Clock::time_point start = Clock::now();
  EXPECT_EQ(poll_until(&fd, 1, start + 50ms), 0);
  EXPECT_GE(Clock::now() - start, 50ms);
}

TEST(PollUntil, APastTimeDoesNotWait) {
  const test::Pipe pipe = test::make_pipe();
  pollfd fd{pipe.read.get(), POLLIN, 0};
  const Clock::time_point start = Clock::now();
  EXPECT_EQ(poll_until(&fd, 1, start - 1s), 0);
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(PollUntil, ReportsAReadyDescriptor) {
  const test::Pipe pipe = test::make_pipe();
  ASSERT_EQ(::write(pipe.write.get(), "x", 1), 1);
  pollfd fd{pipe.read.get(), POLLIN, 0};
  EXPECT_EQ(poll_until(&fd, 1, Clock::time_point::max()), 1);
  EXPECT_NE(fd.revents & POLLIN, 0);
}

}  // namespace
}  // namespace sockecho
