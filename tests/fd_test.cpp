#include "sockecho/fd.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>
#include <utility>

namespace sockecho {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int new_fd() {
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  return fd;
}

TEST(Fd, DefaultIsEmpty) {
  const Fd fd;
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(static_cast<bool>(fd));
  EXPECT_EQ(fd.get(), -1);
}

TEST(Fd, ClosesOnDestruction) {
  const int raw = new_fd();
  {
    const Fd fd(raw);
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(Fd, MoveConstructionTransfersOwnership) {
  const int raw = new_fd();
  Fd a(raw);
  Fd b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_EQ(b.get(), raw);
  EXPECT_TRUE(is_open(raw));
}

TEST(Fd, MoveAssignmentClosesTheOldDescriptorOnce) {
  const int first = new_fd();
  const int second = new_fd();
  Fd a(first);
  Fd b(second);
  a = std::move(b);
  EXPECT_FALSE(is_open(first));
  EXPECT_TRUE(is_open(second));
  EXPECT_EQ(a.get(), second);
  EXPECT_FALSE(b.valid());  // NOLINT(bugprone-use-after-move)
}

TEST(Fd, SelfMoveKeepsTheDescriptor) {
  const int raw = new_fd();
  Fd a(raw);
  Fd& alias = a;
  a = std::move(alias);
  EXPECT_EQ(a.get(), raw);
  EXPECT_TRUE(is_open(raw));
}

TEST(Fd, ReleaseGivesUpOwnership) {
  const int raw = new_fd();
  {
    Fd fd(raw);
    EXPECT_EQ(fd.release(), raw);
    EXPECT_FALSE(fd.valid());
  }
  EXPECT_TRUE(is_open(raw));
  Fd cleanup(raw);
}

TEST(Fd, ResetClosesExactlyOnce) {
  const int first = new_fd();
  Fd fd(first);
  fd.reset();
  EXPECT_FALSE(is_open(first));
  // A descriptor opened now may reuse the number; a second close by fd must not touch it.
  const int reused = new_fd();
  fd.reset();
  EXPECT_TRUE(is_open(reused));
  Fd cleanup(reused);
}

TEST(WriteAll, WritesEverythingToAPipe) {
  std::array<int, 2> fds{};
  ASSERT_EQ(::pipe2(fds.data(), O_CLOEXEC), 0);
  const Fd read_end(fds[0]);
  const Fd write_end(fds[1]);
  write_all(write_end.get(), "hello", "pipe");
  std::array<char, 8> got{};
  ASSERT_EQ(::read(read_end.get(), got.data(), got.size()), 5);
  EXPECT_EQ(std::string(got.data(), 5), "hello");
}

TEST(WriteAll, ReportsTheTargetAndErrno) {
  try {
    write_all(-1, "x", "nowhere");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EBADF);
    EXPECT_EQ(std::string(e.what()).rfind("write nowhere: ", 0), 0U) << e.what();
  }
}

// Run in a child process (a death test), whose 0 and 2 it closes: 0 if every check holds, else
// the number of the check that failed.
int fill_closed_standard_descriptors() {
  const int next = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the lowest number above 0-2
  ::close(next);
  struct stat stdout_before {};
  if (::fstat(STDOUT_FILENO, &stdout_before) != 0) return 1;
  ::close(STDIN_FILENO);
  ::close(STDERR_FILENO);
  ensure_standard_descriptors();
  for (const int fd : {STDIN_FILENO, STDERR_FILENO}) {
    std::array<char, 64> target{};
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), target.data(), target.size());
    if (n < 0 || std::string(target.data(), static_cast<std::size_t>(n)) != "/dev/null") return 2;
    if (::fcntl(fd, F_GETFD) != 0) return 3;  // open, and not close-on-exec
    if ((::fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR) return 4;
  }
  struct stat stdout_after {};
  if (::fstat(STDOUT_FILENO, &stdout_after) != 0 || stdout_after.st_ino != stdout_before.st_ino ||
      stdout_after.st_dev != stdout_before.st_dev) {
    return 5;  // an open one is left alone
  }
  const int after = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (after != next) return 6;  // nothing else left open
  ::close(after);
  ensure_standard_descriptors();  // all open now: nothing to do, nothing left open
  const int again = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (again != next) return 7;
  return 0;
}

TEST(EnsureStandardDescriptorsDeathTest, PutsDevNullOnTheClosedOnesAndNothingElse) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(fill_closed_standard_descriptors()), testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace sockecho
