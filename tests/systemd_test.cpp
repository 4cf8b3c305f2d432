// Socket activation, in this process: descriptors placed at 3, 4, ... and LISTEN_* variables set
// the way a service manager leaves them before it starts a daemon.
#include "sockecho/systemd.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// Descriptor numbers 3 and up, held for a test to fill as a service manager would. Whatever this
// process had there (a test runner may leak descriptors to its children) is moved aside first and
// put back afterwards. Until the test places something there, a slot holds /dev/null, so that the
// sockets the test opens get other numbers.
class InheritedSlots {
 public:
  static constexpr int kSlots = 3;

  InheritedSlots() {
    for (int i = 0; i < kSlots; ++i) {
      const int number = kFirstInheritedFd + i;
      if (is_open(number)) {
        saved_[i].reset(::fcntl(number, F_DUPFD_CLOEXEC, 100));
        if (!saved_[i]) throw std::system_error(errno, std::generic_category(), "save fd");
      }
    }
    // /dev/null is opened at the lowest free number, which may be a slot: moved past them, so
    // that closing it leaves no slot empty for a test's socket to land on.
    Fd null;
    {
      const Fd opened(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!opened) throw std::system_error(errno, std::generic_category(), "open /dev/null");
      null.reset(::fcntl(opened.get(), F_DUPFD_CLOEXEC, kFirstInheritedFd + kSlots));
      if (!null) throw std::system_error(errno, std::generic_category(), "move /dev/null");
    }
    for (int i = 0; i < kSlots; ++i) place(i, null.get());
  }
  InheritedSlots(const InheritedSlots&) = delete;
  InheritedSlots& operator=(const InheritedSlots&) = delete;
  InheritedSlots(InheritedSlots&&) = delete;
  InheritedSlots& operator=(InheritedSlots&&) = delete;

  ~InheritedSlots() {
    for (int i = 0; i < kSlots; ++i) {
      if (saved_[i]) {
        ::dup2(saved_[i].get(), kFirstInheritedFd + i);  // closes what the test left there
      } else {
        vacate(i);
      }
    }
  }

  // Puts a copy of fd at number 3 + slot, without close-on-exec, as it arrives after exec().
  static void place(int slot, int fd) {
    if (::dup2(fd, kFirstInheritedFd + slot) < 0) {
      throw std::system_error(errno, std::generic_category(), "dup2");
    }
  }
  // Leaves number 3 + slot closed.
  static void vacate(int slot) {
    if (is_open(kFirstInheritedFd + slot)) Fd(kFirstInheritedFd + slot).reset();
  }

 private:
  std::array<Fd, kSlots> saved_;
};

// Each test runs alone in its process before any thread starts, so the environment is safe to
// change here.
// NOLINTBEGIN(concurrency-mt-unsafe)
// Sets the LISTEN_* variables for the test, and removes whatever is left of them afterwards.
class ListenEnvironment {
 public:
  ListenEnvironment(const std::string& pid, const std::string& fds,
                    const std::optional<std::string>& names = std::nullopt) {
    ::setenv("LISTEN_PID", pid.c_str(), 1);
    ::setenv("LISTEN_FDS", fds.c_str(), 1);
    if (names) ::setenv("LISTEN_FDNAMES", names->c_str(), 1);
  }
  ListenEnvironment(const ListenEnvironment&) = delete;
  ListenEnvironment& operator=(const ListenEnvironment&) = delete;
  ListenEnvironment(ListenEnvironment&&) = delete;
  ListenEnvironment& operator=(ListenEnvironment&&) = delete;
  ~ListenEnvironment() { clear(); }

  static void clear() {
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
  }
  // NOLINTEND(concurrency-mt-unsafe)
  static bool cleared() {
    return std::getenv("LISTEN_PID") == nullptr && std::getenv("LISTEN_FDS") == nullptr &&
           std::getenv("LISTEN_FDNAMES") == nullptr;
  }
};

std::string my_pid() { return std::to_string(::getpid()); }

// Expects `take` to throw a std::system_error with code `expected` whose message starts with
// `message`, and the variables to be gone anyway.
template <typename Take>
void expect_refused_by(Take take, std::errc expected, const std::string& message) {
  try {
    (void)take();
    ADD_FAILURE() << "took the socket(s); expected: " << message;
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), expected) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(message, 0), 0U)
        << "message '" << e.what() << "' should start with '" << message << "'";
  }
  EXPECT_TRUE(ListenEnvironment::cleared());
}

void expect_refused(std::errc expected, const std::string& message) {
  expect_refused_by([] { return inherited_listeners(); }, expected, message);
}

TEST(SocketActivation, NothingPassedMeansNoSockets) {
  const InheritedSlots slots;
  ListenEnvironment::clear();
  EXPECT_TRUE(inherited_listeners().empty());
  EXPECT_FALSE(inherited_listener().has_value());
  EXPECT_TRUE(inherited_named_listeners().empty());
  const InheritedSockets sockets = inherited_sockets();
  EXPECT_FALSE(sockets.main.has_value());
  EXPECT_FALSE(sockets.status.has_value());
}

TEST(SocketActivation, PassedSocketsAreAdoptedInOrderAndTheVariablesRemoved) {
  const InheritedSlots slots;
  Listener v4 = Listener::bind("127.0.0.1", 0);
  Listener v6 = Listener::bind("::1", 0);
  InheritedSlots::place(0, v4.fd());
  InheritedSlots::place(1, v6.fd());
  const ListenEnvironment env(my_pid(), "2", "ipv4:ipv6");

  std::vector<Listener> listeners = inherited_listeners();
  ASSERT_EQ(listeners.size(), 2U);
  EXPECT_TRUE(ListenEnvironment::cleared()) << "children must not inherit the variables";
  EXPECT_EQ(listeners[0].fd(), 3);
  EXPECT_EQ(listeners[1].fd(), 4);
  EXPECT_EQ(listeners[0].address(), v4.address());
  EXPECT_EQ(listeners[1].address(), v6.address());
  for (Listener& listener : listeners) {
    EXPECT_TRUE(listener.adopted());
    EXPECT_TRUE(test::close_on_exec(listener.fd()));
    Connection client = connect(listener.address().host(), listener.address().port());
    EXPECT_TRUE(listener.accept().has_value());
  }
  listeners.clear();
  EXPECT_FALSE(is_open(3)) << "the Listeners own the passed descriptors";
  EXPECT_FALSE(is_open(4));
}

TEST(SocketActivation, SocketsForAnotherProcessAreLeftAlone) {
  const InheritedSlots slots;
  const Listener listener = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, listener.fd());
  // A parent that was socket-activated and did not clear the variables before starting us.
  const ListenEnvironment env(std::to_string(::getppid()), "1");
  EXPECT_TRUE(inherited_listeners().empty());
  EXPECT_TRUE(ListenEnvironment::cleared());
  EXPECT_TRUE(is_open(3));
  EXPECT_FALSE(test::close_on_exec(3)) << "a descriptor that is not ours must not be touched";
}

TEST(SocketActivation, ZeroSocketsPassed) {
  const InheritedSlots slots;
  const ListenEnvironment env(my_pid(), "0");
  EXPECT_TRUE(inherited_listeners().empty());
  EXPECT_TRUE(ListenEnvironment::cleared());
}

TEST(SocketActivation, MalformedVariablesAreRefused) {
  const InheritedSlots slots;
  for (const std::string pid : {"", "abc", "-1", "0", "12x", "99999999999999999999"}) {
    const ListenEnvironment env(pid, "1");
    expect_refused(std::errc::invalid_argument, "LISTEN_PID=" + pid + ":");
  }
  for (const std::string fds : {"", "one", "-1", "1 ", "+1", "4294967296"}) {
    const ListenEnvironment env(my_pid(), fds);
    expect_refused(std::errc::invalid_argument, "LISTEN_FDS=" + fds + ":");
  }
}

TEST(SocketActivation, APassedDescriptorThatIsNotOpenIsRefused) {
  const InheritedSlots slots;
  const Listener listener = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, listener.fd());
  InheritedSlots::vacate(1);
  const ListenEnvironment env(my_pid(), "2");  // says two, but only 3 is open
  expect_refused(std::errc::bad_file_descriptor, "LISTEN_FDS fd 4: Bad file descriptor");
  EXPECT_FALSE(is_open(3)) << "every passed descriptor is closed when they cannot be used";
}

TEST(SocketActivation, ADescriptorMissingBetweenOthersLeavesNoneOpen) {
  const InheritedSlots slots;
  const Listener first = Listener::bind("127.0.0.1", 0);
  const Listener last = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, first.fd());
  InheritedSlots::vacate(1);
  InheritedSlots::place(2, last.fd());
  const ListenEnvironment env(my_pid(), "3");  // 3 and 5 are open, 4 is not
  expect_refused(std::errc::bad_file_descriptor, "LISTEN_FDS fd 4: Bad file descriptor");
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(5)) << "a descriptor after the missing one is passed too, and closed";
}

TEST(SocketActivation, APassedDescriptorThatDoesNotListenIsRefused) {
  const InheritedSlots slots;
  const Listener listener = Listener::bind("127.0.0.1", 0);
  const Connection connected = connect("127.0.0.1", listener.address().port());
  InheritedSlots::place(0, listener.fd());
  InheritedSlots::place(1, connected.fd());  // as with Accept=yes, which sockecho does not use
  const ListenEnvironment env(my_pid(), "2");
  expect_refused(std::errc::invalid_argument, "adopt fd 4 (not a listening stream socket)");
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4));
}

TEST(SocketActivation, ASingleSocketIsExpectedByInheritedListener) {
  const InheritedSlots slots;
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, a.fd());
  InheritedSlots::place(1, b.fd());
  const ListenEnvironment env(my_pid(), "2");
  try {
    (void)inherited_listener();
    ADD_FAILURE() << "accepted two sockets where one was expected";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
    EXPECT_EQ(std::string(e.what()),
              "LISTEN_FDS=2 (a single listening socket was expected): Invalid argument");
  }
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4));
}

TEST(SocketActivation, AServerOnAnInheritedSocketStopsWithoutShuttingItDown) {
  const InheritedSlots slots;
  Listener original = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = original.address().port();
  InheritedSlots::place(0, original.fd());
  const ListenEnvironment env(my_pid(), "1");
  std::optional<Listener> inherited = inherited_listener();
  ASSERT_TRUE(inherited.has_value());
  {
    ServerOptions options;
    options.workers = 3;
    Server server(std::move(*inherited), echo_protocol(prefix_handler("> ")), options);
    std::thread runner([&] { server.run(); });
    EXPECT_EQ(request("127.0.0.1", port, "hello"), "> hello");
    server.stop();
    runner.join();
  }
  // The service manager's copy still listens: a connection made now waits for the next server.
  Connection client = connect("127.0.0.1", port);
  client.write_all("next");
  client.close_write();
  std::optional<Connection> queued = original.accept();
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(queued->read_to_end_string(), "next");
}

// A connection made to `listener` is the one its accept() takes.
void expect_serves(Listener& listener) {
  const Connection client = connect(listener.address());
  const std::optional<Connection> accepted = listener.accept();
  ASSERT_TRUE(accepted.has_value()) << listener.address().to_string();
  EXPECT_TRUE(accepted->is_open());
}

std::vector<std::string> names_of(const std::vector<NamedListener>& listeners) {
  std::vector<std::string> names;
  names.reserve(listeners.size());
  for (const NamedListener& named : listeners) names.push_back(named.name);
  return names;
}

void expect_sockets_refused(std::errc expected, const std::string& message) {
  expect_refused_by([] { return inherited_sockets(); }, expected, message);
}

TEST(SocketActivationNames, NamesAreReadInOrder) {
  const InheritedSlots slots;
  const test::ScratchDir dir;
  Listener v4 = Listener::bind("127.0.0.1", 0);
  Listener v6 = Listener::bind("::1", 0);
  Listener local = Listener::bind_unix(dir.file("status.sock"));
  InheritedSlots::place(0, v4.fd());
  InheritedSlots::place(1, v6.fd());
  InheritedSlots::place(2, local.fd());
  const ListenEnvironment env(my_pid(), "3", "sockecho.socket:extra:status");

  std::vector<NamedListener> listeners = inherited_named_listeners();
  EXPECT_TRUE(ListenEnvironment::cleared()) << "children must not inherit the variables";
  ASSERT_EQ(listeners.size(), 3U);
  EXPECT_EQ(names_of(listeners), (std::vector<std::string>{"sockecho.socket", "extra", "status"}));
  EXPECT_EQ(listeners[0].listener.fd(), 3);
  EXPECT_EQ(listeners[1].listener.fd(), 4);
  EXPECT_EQ(listeners[2].listener.fd(), 5);
  EXPECT_EQ(listeners[0].listener.address(), v4.address());
  EXPECT_EQ(listeners[1].listener.address(), v6.address());
  EXPECT_EQ(listeners[2].listener.address(), local.address());
  for (NamedListener& named : listeners) {
    EXPECT_TRUE(named.listener.adopted()) << named.name;
    EXPECT_TRUE(test::close_on_exec(named.listener.fd())) << named.name;
    expect_serves(named.listener);
  }
  listeners.clear();
  EXPECT_FALSE(is_open(3)) << "the Listeners own the passed descriptors";
  EXPECT_FALSE(is_open(4));
  EXPECT_FALSE(is_open(5));
}

TEST(SocketActivationNames, MissingNamesAreUnknown) {
  const InheritedSlots slots;
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("127.0.0.1", 0);
  const Listener c = Listener::bind("127.0.0.1", 0);
  // Unset, empty, and names of which some are empty.
  for (const std::optional<std::string>& names :
       {std::optional<std::string>(), std::optional<std::string>(""),
        std::optional<std::string>("::status")}) {
    SCOPED_TRACE(names.value_or("(unset)"));
    InheritedSlots::place(0, a.fd());
    InheritedSlots::place(1, b.fd());
    InheritedSlots::place(2, c.fd());
    const ListenEnvironment env(my_pid(), "3", names);
    const std::vector<NamedListener> listeners = inherited_named_listeners();
    EXPECT_TRUE(ListenEnvironment::cleared());
    ASSERT_EQ(listeners.size(), 3U);
    EXPECT_EQ(listeners[0].name, "unknown");
    EXPECT_EQ(listeners[1].name, "unknown");
    EXPECT_EQ(listeners[2].name, names == "::status" ? "status" : "unknown");
    EXPECT_EQ(listeners[2].listener.address(), c.address());
  }
}

TEST(SocketActivationNames, ACountOfNamesOtherThanLISTEN_FDSIsRefusedAndEveryDescriptorClosed) {
  const InheritedSlots slots;
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("127.0.0.1", 0);
  for (const std::string names : {"sockecho.socket", "a:b:status", "a::"}) {
    SCOPED_TRACE(names);
    InheritedSlots::place(0, a.fd());
    InheritedSlots::place(1, b.fd());
    const ListenEnvironment env(my_pid(), "2", names);
    expect_refused_by([] { return inherited_named_listeners(); }, std::errc::invalid_argument,
                      "LISTEN_FDNAMES=" + names +
                          " (LISTEN_FDS=2: one name per socket was expected): Invalid argument");
    EXPECT_FALSE(is_open(3)) << "every passed descriptor is closed when the names are wrong";
    EXPECT_FALSE(is_open(4));
  }
  // inherited_sockets() reads the names the same way.
  InheritedSlots::place(0, a.fd());
  InheritedSlots::place(1, b.fd());
  const ListenEnvironment env(my_pid(), "2", "status");
  expect_sockets_refused(std::errc::invalid_argument, "LISTEN_FDNAMES=status (LISTEN_FDS=2:");
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4));
}

TEST(SocketActivationNames, InheritedListenersIgnoresTheNamesAsBefore) {
  // As sd_listen_fds() does: a daemon that asks for no names is not refused for them.
  const InheritedSlots slots;
  const Listener a = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, a.fd());
  const ListenEnvironment env(my_pid(), "1", "one:two");
  const std::optional<Listener> listener = inherited_listener();
  ASSERT_TRUE(listener.has_value());
  EXPECT_EQ(listener->address(), a.address());
  EXPECT_TRUE(ListenEnvironment::cleared());
}

TEST(InheritedSockets, TheMainSocketAndTheStatusSocketWhateverTheirOrder) {
  const InheritedSlots slots;
  const test::ScratchDir dir;
  const std::string path = dir.file("status.sock");
  Listener status = Listener::bind_unix(path);
  Listener main = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, status.fd());
  InheritedSlots::place(1, main.fd());
  const ListenEnvironment env(my_pid(), "2", "status:sockecho.socket");

  InheritedSockets sockets = inherited_sockets();
  EXPECT_TRUE(ListenEnvironment::cleared());
  ASSERT_TRUE(sockets.main.has_value());
  ASSERT_TRUE(sockets.status.has_value());
  EXPECT_EQ(sockets.main->fd(), 4);
  EXPECT_EQ(sockets.main->address(), main.address());
  EXPECT_EQ(sockets.status->fd(), 3);
  EXPECT_EQ(sockets.status->address().to_string(), "unix:" + path);
  EXPECT_TRUE(sockets.main->adopted());
  EXPECT_TRUE(sockets.status->adopted());
  expect_serves(*sockets.main);
  expect_serves(*sockets.status);
  sockets = InheritedSockets{};
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4));
}

TEST(InheritedSockets, AStatusSocketAlone) {
  const InheritedSlots slots;
  const Listener status = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, status.fd());
  const ListenEnvironment env(my_pid(), "1", "status");
  const InheritedSockets sockets = inherited_sockets();
  EXPECT_FALSE(sockets.main.has_value()) << "the main listener binds its own address then";
  ASSERT_TRUE(sockets.status.has_value());
  EXPECT_EQ(sockets.status->address(), status.address());
}

TEST(InheritedSockets, AnUnnamedSocketIsTheMainOne) {
  const InheritedSlots slots;
  const Listener main = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, main.fd());
  const ListenEnvironment env(my_pid(), "1");  // no LISTEN_FDNAMES: named "unknown"
  const InheritedSockets sockets = inherited_sockets();
  ASSERT_TRUE(sockets.main.has_value());
  EXPECT_EQ(sockets.main->address(), main.address());
  EXPECT_FALSE(sockets.status.has_value());
}

TEST(InheritedSockets, TwoSocketsNotNamedStatusAreRefused) {
  const InheritedSlots slots;
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("127.0.0.1", 0);
  const Listener status = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, a.fd());
  InheritedSlots::place(1, status.fd());
  InheritedSlots::place(2, b.fd());
  {
    const ListenEnvironment env(my_pid(), "3", "sockecho.socket:status:sockecho-unix.socket");
    expect_sockets_refused(std::errc::invalid_argument,
                           "LISTEN_FDS=3 (one socket not named 'status' was expected: fd 3 "
                           "'sockecho.socket', fd 5 'sockecho-unix.socket'): Invalid argument");
    EXPECT_FALSE(is_open(3));
    EXPECT_FALSE(is_open(4)) << "the status socket is closed too";
    EXPECT_FALSE(is_open(5));
  }
  // Without names, both are unnamed.
  InheritedSlots::place(0, a.fd());
  InheritedSlots::place(1, b.fd());
  const ListenEnvironment env(my_pid(), "2");
  expect_sockets_refused(std::errc::invalid_argument,
                         "LISTEN_FDS=2 (one socket not named 'status' was expected: fd 3 "
                         "'unknown', fd 4 'unknown'): Invalid argument");
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4));
}

TEST(InheritedSockets, TwoSocketsNamedStatusAreRefused) {
  const InheritedSlots slots;
  const Listener main = Listener::bind("127.0.0.1", 0);
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("127.0.0.1", 0);
  InheritedSlots::place(0, a.fd());
  InheritedSlots::place(1, main.fd());
  InheritedSlots::place(2, b.fd());
  const ListenEnvironment env(my_pid(), "3", "status:sockecho.socket:status");
  expect_sockets_refused(
      std::errc::invalid_argument,
      "LISTEN_FDNAMES (one socket named 'status' was expected: fd 3, fd 5): Invalid argument");
  EXPECT_FALSE(is_open(3));
  EXPECT_FALSE(is_open(4)) << "the main socket is closed too";
  EXPECT_FALSE(is_open(5));
}

TEST(InheritedSockets, AUnixSocketIsAdoptedWithItsPathAndItsFileLeftInPlace) {
  const InheritedSlots slots;
  const test::ScratchDir dir;
  const std::string path = dir.file("status.sock");
  const Listener unit = Listener::bind_unix(path);  // systemd's socket, as ListenStream= binds it
  InheritedSlots::place(0, unit.fd());
  const ListenEnvironment env(my_pid(), "1", "status");
  {
    std::optional<Listener> status = inherited_sockets().status;
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(status->adopted());
    EXPECT_EQ(status->address().to_string(), "unix:" + path) << "what the daemon prints";
    EXPECT_EQ(status->address(), Address::unix_path(path));
    expect_serves(*status);
  }
  EXPECT_FALSE(is_open(3));
  struct stat file {};
  EXPECT_EQ(::lstat(path.c_str(), &file), 0) << "the socket file is systemd's, never removed";
  EXPECT_TRUE(S_ISSOCK(file.st_mode));
}

}  // namespace
}  // namespace sockecho
