#include "sockecho/systemd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "sockecho/error.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

namespace {

constexpr const char* kPidVariable = "LISTEN_PID";
constexpr const char* kFdsVariable = "LISTEN_FDS";
constexpr const char* kNamesVariable = "LISTEN_FDNAMES";

// A variable's value as a whole number from 1 (0 when zero_allowed) to max; throws EINVAL naming
// the variable and its value otherwise.
long parse_variable(const char* name, std::string_view text, long max, bool zero_allowed) {
  const auto bad = [&] { return os_error(EINVAL, std::string(name) + "=" + std::string(text)); };
  if (text.empty()) throw bad();
  long value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') throw bad();
    const long digit = c - '0';
    if (value > (max - digit) / 10) throw bad();
    value = value * 10 + digit;
  }
  if (value == 0 && !zero_allowed) throw bad();
  return value;
}

// The environment is not thread-safe; inherited_listeners() documents that it must run before
// the process starts threads, which is when a service manager's variables are read anyway.
void forget_variables() noexcept {
  ::unsetenv(kPidVariable);    // NOLINT(concurrency-mt-unsafe): called before threads start
  ::unsetenv(kFdsVariable);    // NOLINT(concurrency-mt-unsafe)
  ::unsetenv(kNamesVariable);  // NOLINT(concurrency-mt-unsafe)
}

// How many descriptors LISTEN_PID and LISTEN_FDS pass to this process: 0 when none.
int passed_count() {
  const char* pid_text = std::getenv(kPidVariable);
  if (pid_text == nullptr) return 0;
  const long pid = parse_variable(kPidVariable, pid_text, INT_MAX, /*zero_allowed=*/false);
  if (pid != ::getpid()) return 0;  // meant for another process, perhaps our parent
  const char* fds_text = std::getenv(kFdsVariable);
  if (fds_text == nullptr) return 0;
  return static_cast<int>(
      parse_variable(kFdsVariable, fds_text, INT_MAX - kFirstInheritedFd, /*zero_allowed=*/true));
}

}  // namespace

std::vector<Listener> inherited_listeners() {
  int count = 0;
  try {
    count = passed_count();
  } catch (...) {
    forget_variables();
    throw;
  }
  forget_variables();

  // Own every passed descriptor that is open before anything can fail, so that whatever fails
  // below, all of them are closed (the ones after a missing number too); but never a number
  // that is not open, which this process could hand out again meanwhile.
  std::vector<Fd> passed;
  passed.reserve(static_cast<std::size_t>(count));
  int missing = -1;
  int missing_errno = 0;
  for (int fd = kFirstInheritedFd; fd < kFirstInheritedFd + count; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      if (missing < 0) {
        missing = fd;
        missing_errno = errno;
      }
      continue;
    }
    passed.emplace_back(fd);
  }
  if (missing >= 0) {
    throw os_error(missing_errno, std::string(kFdsVariable) + " fd " + std::to_string(missing));
  }
  std::vector<Listener> listeners;
  listeners.reserve(passed.size());
  for (Fd& fd : passed) listeners.emplace_back(std::move(fd));
  return listeners;
}

std::optional<Listener> inherited_listener() {
  std::vector<Listener> listeners = inherited_listeners();
  if (listeners.empty()) return std::nullopt;
  if (listeners.size() > 1) {
    throw os_error(EINVAL, std::string(kFdsVariable) + "=" + std::to_string(listeners.size()) +
                               " (a single listening socket was expected)");
  }
  return std::move(listeners.front());
}

}  // namespace sockecho
