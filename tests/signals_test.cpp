// SignalWaiter and StopOnSignals in this process: signals sent with kill() to the process as a
// whole, as a supervisor or a user sends them, taken by the waiting thread.
#include "sockecho/signals.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <stdexcept>

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// A count that callbacks on the waiting thread raise and the test waits on, bounded.
class Counter {
 public:
  void add() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      ++count_;
    }
    changed_.notify_all();
  }
  // True once the count reaches n, false after 20 s.
  bool wait_for(int n) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, 20s, [&] { return count_ >= n; });
  }
  int get() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

void send(int signal) { ASSERT_EQ(::kill(::getpid(), signal), 0); }

TEST(SignalWaiter, CallRunsTheCallbackEachTimeAndIgnoredSignalsDoNothing) {
  Counter usr1;
  const SignalWaiter waiter({OnSignal::call(SIGUSR1, [&] { usr1.add(); }),
                             OnSignal::ignore(SIGUSR2), OnSignal::ignore(SIGALRM)});
  for (int i = 1; i <= 3; ++i) {
    send(SIGUSR1);
    ASSERT_TRUE(usr1.wait_for(i)) << "callback " << i;
  }
  // Default actions would end this process: still here, and the waiter still answers.
  for (int i = 0; i < 5; ++i) {
    send(SIGUSR2);
    send(SIGALRM);
  }
  send(SIGUSR1);
  EXPECT_TRUE(usr1.wait_for(4));
  EXPECT_EQ(usr1.get(), 4);
}

TEST(SignalWaiter, OnlyTheFirstStopSignalCallsBackAndCallSignalsGoOnMeanwhile) {
  Counter stops;
  Counter usr1;
  const SignalWaiter waiter({OnSignal::stop(SIGTERM, [&] { stops.add(); }),
                             OnSignal::stop(SIGINT, [&] { stops.add(); }),
                             OnSignal::call(SIGUSR1, [&] { usr1.add(); })});
  send(SIGINT);
  ASSERT_TRUE(stops.wait_for(1));
  send(SIGUSR1);
  ASSERT_TRUE(usr1.wait_for(1));
  EXPECT_EQ(stops.get(), 1);
}

TEST(SignalWaiterDeathTest, ASecondStopSignalEndsTheProcessWithItsDefaultAction) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Counter stops;
        const SignalWaiter waiter({OnSignal::stop(SIGTERM, [&] { stops.add(); }),
                                   OnSignal::stop(SIGHUP, [&] { stops.add(); })});
        send(SIGHUP);
        if (!stops.wait_for(1)) std::_Exit(3);
        send(SIGTERM);
        for (;;) ::pause();
      },
      testing::KilledBySignal(SIGTERM), "");
}

TEST(SignalWaiter, RefusesWhatItCannotDo) {
  EXPECT_THROW(SignalWaiter({}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::ignore(SIGUSR2), OnSignal::ignore(SIGUSR2)}),
               std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::ignore(SIGKILL)}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::ignore(SIGSTOP)}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::ignore(0)}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::ignore(100000)}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::call(SIGUSR1, {})}), std::invalid_argument);
  EXPECT_THROW(SignalWaiter({OnSignal::stop(SIGTERM, {})}), std::invalid_argument);
}

TEST(StopOnSignals, CallsBackOnceOnTheFirstSignal) {
  Counter stops;
  const StopOnSignals stop([&] { stops.add(); }, {SIGINT, SIGTERM});
  send(SIGTERM);
  EXPECT_TRUE(stops.wait_for(1));
  EXPECT_EQ(stops.get(), 1);
  EXPECT_THROW(StopOnSignals([] {}, {}), std::invalid_argument);
  EXPECT_THROW(StopOnSignals({}), std::invalid_argument);
}

}  // namespace
}  // namespace sockecho
