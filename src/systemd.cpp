#include "sockecho/systemd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// How many descriptors LISTEN_PID and LISTEN_FDS pass to this process; std::nullopt when they
// pass none: unset, or meant for another process.
std::optional<int> passed_count() {
  const char* pid_text = std::getenv(kPidVariable);
  if (pid_text == nullptr) return std::nullopt;
  const long pid = parse_variable(kPidVariable, pid_text, INT_MAX, /*zero_allowed=*/false);
  if (pid != ::getpid()) return std::nullopt;  // meant for another process, perhaps our parent
  const char* fds_text = std::getenv(kFdsVariable);
  if (fds_text == nullptr) return std::nullopt;
  return static_cast<int>(
      parse_variable(kFdsVariable, fds_text, INT_MAX - kFirstInheritedFd, /*zero_allowed=*/true));
}

// What the service manager passed: each descriptor, owned, and its name.
struct Passed {
  std::vector<Fd> fds;
  std::vector<std::string> names;  // one per descriptor; empty when not asked for
};

// A LISTEN_FDNAMES that is not empty, split at its colons. An empty name (two colons in a row)
// is a socket the manager left unnamed, not a reason to refuse them all.
std::vector<std::string> split_names(std::string_view text) {
  std::vector<std::string> names;
  for (;;) {
    const std::size_t colon = text.find(':');
    const std::string_view name = text.substr(0, colon);
    names.emplace_back(name.empty() ? std::string_view(kUnnamedSocket) : name);
    if (colon == std::string_view::npos) return names;
    text.remove_prefix(colon + 1);
  }
}

// Reads the variables, removes them from the environment and owns every descriptor they pass;
// with read_names, LISTEN_FDNAMES gives each its name.
Passed take_passed(bool read_names) {
  int count = 0;
  std::optional<std::string> names_text;
  try {
    if (const std::optional<int> passed = passed_count()) {
      count = *passed;
      // Copied, as the variable goes away with the others below. Unset or empty, it names no
      // socket: systemd documents that the names may be missing.
      const char* names_value = std::getenv(kNamesVariable);
      if (read_names && names_value != nullptr && *names_value != '\0') names_text = names_value;
    }
  } catch (...) {
    forget_variables();
    throw;
  }
  forget_variables();

  // Own every passed descriptor that is open before anything can fail, so that whatever fails
  // below, all of them are closed (the ones after a missing number too); but never a number
  // that is not open, which this process could hand out again meanwhile.
  Passed passed;
  passed.fds.reserve(static_cast<std::size_t>(count));
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
    passed.fds.emplace_back(fd);
  }
  if (missing >= 0) {
    throw os_error(missing_errno, std::string(kFdsVariable) + " fd " + std::to_string(missing));
  }

  if (read_names) {
    if (names_text) {
      passed.names = split_names(*names_text);
      if (passed.names.size() != static_cast<std::size_t>(count)) {
        throw os_error(EINVAL, std::string(kNamesVariable) + "=" + *names_text + " (" +
                                   kFdsVariable + "=" + std::to_string(count) +
                                   ": one name per socket was expected)");
      }
    } else {
      passed.names.assign(passed.fds.size(), kUnnamedSocket);
    }
  }
  return passed;
}

// The sockets an error is about, as "fd 3 'a', fd 5 'b'" (without names when none are given).
std::string fd_list(const std::vector<int>& fds, const std::vector<std::string>& names) {
  std::string text;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (i > 0) text += ", ";
    text += "fd " + std::to_string(fds[i]);
    if (!names.empty()) text += " '" + names[i] + "'";
  }
  return text;
}

}  // namespace

std::vector<Listener> inherited_listeners() {
  Passed passed = take_passed(/*read_names=*/false);
  std::vector<Listener> listeners;
  listeners.reserve(passed.fds.size());
  for (Fd& fd : passed.fds) listeners.emplace_back(std::move(fd));
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

std::vector<NamedListener> inherited_named_listeners() {
  Passed passed = take_passed(/*read_names=*/true);
  std::vector<NamedListener> listeners;
  listeners.reserve(passed.fds.size());
  for (std::size_t i = 0; i < passed.fds.size(); ++i) {
    listeners.push_back({std::move(passed.names[i]), Listener(std::move(passed.fds[i]))});
  }
  return listeners;
}

InheritedSockets inherited_sockets() {
  std::vector<NamedListener> listeners = inherited_named_listeners();
  // Which descriptors went where, to name them all when there are too many.
  std::vector<int> main_fds;
  std::vector<std::string> main_names;
  std::vector<int> status_fds;
  InheritedSockets sockets;
  for (NamedListener& named : listeners) {
    if (named.name == kStatusSocketName) {
      status_fds.push_back(named.listener.fd());
      if (!sockets.status) sockets.status = std::move(named.listener);
    } else {
      main_fds.push_back(named.listener.fd());
      main_names.push_back(named.name);
      if (!sockets.main) sockets.main = std::move(named.listener);
    }
  }
  // Every listener, taken or not, is destroyed (closing its descriptor) when this throws.
  if (main_fds.size() > 1) {
    throw os_error(EINVAL, std::string(kFdsVariable) + "=" + std::to_string(listeners.size()) +
                               " (one socket not named '" + kStatusSocketName +
                               "' was expected: " + fd_list(main_fds, main_names) + ")");
  }
  if (status_fds.size() > 1) {
    throw os_error(EINVAL, std::string(kNamesVariable) + " (one socket named '" +
                               kStatusSocketName + "' was expected: " + fd_list(status_fds, {}) +
                               ")");
  }
  return sockets;
}

}  // namespace sockecho
