#include "sockecho/listener.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

bool non_blocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// A second descriptor of a listener's socket, as a service manager keeps one while the daemon
// uses the copy it passed on.
Fd duplicate_of(const Listener& listener) {
  Fd copy(::fcntl(listener.fd(), F_DUPFD_CLOEXEC, 0));
  if (!copy) throw std::system_error(errno, std::generic_category(), "dup");
  return copy;
}

void expect_adoption_refused(Fd socket, std::errc expected, const std::string& reason) {
  try {
    const Listener listener{std::move(socket)};
    ADD_FAILURE() << "adopted a socket that should have been refused (" << reason << ")";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), expected) << e.what();
    EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
  }
}

TEST(Listener, PortZeroPicksAFreePortAndReportsIt) {
  const Listener listener = Listener::bind("127.0.0.1", 0);
  EXPECT_NE(listener.address().port(), 0);
  EXPECT_EQ(listener.address().host(), "127.0.0.1");
  EXPECT_EQ(listener.address(), Address::local_of(listener.fd()));
}

TEST(Listener, IPv6Loopback) {
  const Listener listener = Listener::bind("::1", 0);
  EXPECT_EQ(listener.address().family(), AF_INET6);
  EXPECT_EQ(listener.address().to_string(), "[::1]:" + std::to_string(listener.address().port()));
}

TEST(Listener, SocketIsCloseOnExecWithReuseAddr) {
  const Listener listener = Listener::bind("127.0.0.1", 0);
  EXPECT_TRUE(test::close_on_exec(listener.fd()));
  int on = 0;
  socklen_t len = sizeof on;
  ASSERT_EQ(::getsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &on, &len), 0);
  EXPECT_NE(on, 0);
  ASSERT_EQ(::getsockopt(listener.fd(), SOL_SOCKET, SO_REUSEPORT, &on, &len), 0);
  EXPECT_EQ(on, 0) << "SO_REUSEPORT must stay off unless asked for";
}

TEST(Listener, AddressInUseCarriesErrnoAndTheAddress) {
  const Listener first = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = first.address().port();
  try {
    (void)Listener::bind("127.0.0.1", port);
    FAIL() << "bound a port that is in use";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_EQ(std::string(e.what()),
              "bind 127.0.0.1:" + std::to_string(port) + ": Address already in use");
  }
}

TEST(Listener, ReusePortLetsTwoListenersShareAPort) {
  ListenOptions options;
  options.reuse_port = true;
  const Listener first = Listener::bind("127.0.0.1", 0, options);
  const Listener second = Listener::bind("127.0.0.1", first.address().port(), options);
  EXPECT_EQ(first.address(), second.address());
}

TEST(Listener, AcceptReturnsAConnectionThatKnowsItsPeer) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  Connection client = connect("127.0.0.1", listener.address().port());
  std::optional<Connection> accepted = listener.accept();
  ASSERT_TRUE(accepted.has_value());
  EXPECT_TRUE(test::close_on_exec(accepted->fd()));
  EXPECT_EQ(accepted->peer(), Address::local_of(client.fd()));
}

TEST(Listener, InterruptWakesEveryBlockedAccept) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  std::atomic<int> returned{0};
  std::vector<std::thread> threads;
  threads.reserve(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      if (!listener.accept().has_value()) ++returned;
    });
  }
  listener.interrupt();
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(returned.load(), 3);
  EXPECT_TRUE(listener.interrupted());
  EXPECT_FALSE(listener.accept().has_value()) << "accept after interrupt must not block";
}

TEST(Listener, AdoptsAnInheritedListeningSocket) {
  Listener original = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = original.address().port();
  Fd duplicate(::dup(original.fd()));  // stands in for a descriptor a service manager passed on
  ASSERT_TRUE(duplicate.valid());
  Listener adopted(std::move(duplicate));
  EXPECT_EQ(adopted.address().port(), port);
  EXPECT_TRUE(test::close_on_exec(adopted.fd()));
  Connection client = connect("127.0.0.1", port);
  EXPECT_TRUE(adopted.accept().has_value());
}

TEST(Listener, RefusesToAdoptASocketThatIsNotListening) {
  Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket.valid());
  expect_adoption_refused(std::move(socket), std::errc::invalid_argument,
                          "not a listening stream socket");
}

TEST(Listener, RefusesToAdoptADatagramSocket) {
  Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket.valid());
  expect_adoption_refused(std::move(socket), std::errc::invalid_argument,
                          "not a listening stream socket");
}

TEST(Listener, AdoptsAUnixSocket) {
  Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // An abstract name (leading NUL): nothing in the file system to clean up.
  const std::string name = "sockecho-listener-test-" + std::to_string(::getpid());
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(::bind(socket.get(), reinterpret_cast<const sockaddr*>(&address), len), 0);
  ASSERT_EQ(::listen(socket.get(), 1), 0);
  const Listener adopted(std::move(socket));
  EXPECT_TRUE(adopted.adopted());
  EXPECT_EQ(adopted.address().to_string(), "unix:@" + name);
}

TEST(Listener, RefusesToAdoptSomethingThatIsNotASocket) {
  std::array<int, 2> pipe_fds{};
  ASSERT_EQ(::pipe2(pipe_fds.data(), O_CLOEXEC), 0);
  const Fd write_end(pipe_fds[1]);
  const int fd = pipe_fds[0];
  expect_adoption_refused(Fd(fd), std::errc::not_a_socket, "adopt fd " + std::to_string(fd));
}

TEST(Listener, AdoptedSocketIsMadeNonBlockingAndGivenBackAsFound) {
  const Listener original = Listener::bind("127.0.0.1", 0);
  ASSERT_FALSE(non_blocking(original.fd()));
  {
    const Listener adopted(duplicate_of(original));
    EXPECT_TRUE(adopted.adopted());
    EXPECT_FALSE(original.adopted());
    // The flag belongs to the socket, so the original descriptor sees it too.
    EXPECT_TRUE(non_blocking(original.fd()));
  }
  EXPECT_FALSE(non_blocking(original.fd())) << "the adopter must restore the socket's flags";
}

TEST(Listener, AdoptedInterruptWakesBlockedAcceptsAndLeavesTheSocketListening) {
  Listener original = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = original.address().port();
  Listener adopted(duplicate_of(original));
  std::vector<std::future<bool>> accepts;
  accepts.reserve(3);
  for (int i = 0; i < 3; ++i) {
    accepts.push_back(std::async(std::launch::async, [&] { return adopted.accept().has_value(); }));
  }
  adopted.interrupt();
  for (auto& accepted : accepts) {
    ASSERT_EQ(accepted.wait_for(test::kPatience), std::future_status::ready)
        << "an accept() on the adopted socket was not woken";
    EXPECT_FALSE(accepted.get());
  }
  EXPECT_FALSE(adopted.accept().has_value()) << "accept after interrupt must not block";

  // The socket itself was not shut down: a new client is queued and taken through the original.
  Connection client = connect("127.0.0.1", port);
  std::optional<Connection> taken = original.accept();
  ASSERT_TRUE(taken.has_value());
  client.write_all("still here");
  client.close_write();
  EXPECT_EQ(taken->read_to_end_string(), "still here");
}

TEST(Listener, AdoptedSocketServesSeveralAcceptingThreads) {
  const Listener original = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = original.address().port();
  Listener adopted(duplicate_of(original));
  constexpr int kThreads = 4;
  std::vector<std::future<std::string>> servers;
  servers.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    servers.push_back(std::async(std::launch::async, [&] {
      std::optional<Connection> c = adopted.accept();
      if (!c) return std::string("(interrupted)");
      return c->read_to_end_string();
    }));
  }
  std::vector<Connection> clients;
  clients.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    clients.push_back(connect("127.0.0.1", port));
    clients.back().write_all("client " + std::to_string(i));
    clients.back().close_write();
  }
  std::vector<std::string> got;
  for (auto& server : servers) {
    ASSERT_EQ(server.wait_for(test::kPatience), std::future_status::ready);
    got.push_back(server.get());
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"client 0", "client 1", "client 2", "client 3"}));
}

// Every connection is non-blocking (its waits are poll()s against its deadline), whichever
// listener it came from; the adopted listening socket's own flag is the giver's business.
TEST(Listener, AcceptedConnectionsOfAnAdoptedSocketAreNonBlockingLikeAnyOther) {
  const Listener original = Listener::bind("127.0.0.1", 0);
  Listener adopted(duplicate_of(original));
  Connection client = connect("127.0.0.1", adopted.address().port());
  std::optional<Connection> accepted = adopted.accept();
  ASSERT_TRUE(accepted.has_value());
  EXPECT_TRUE(non_blocking(accepted->fd()));
  EXPECT_TRUE(test::close_on_exec(accepted->fd()));
}

TEST(Listener, MovedAdoptedListenerStillInterrupts) {
  const Listener original = Listener::bind("127.0.0.1", 0);
  Listener first(duplicate_of(original));
  Listener adopted(std::move(first));
  EXPECT_TRUE(adopted.adopted());
  auto accepted = std::async(std::launch::async, [&] { return adopted.accept().has_value(); });
  adopted.interrupt();
  ASSERT_EQ(accepted.wait_for(test::kPatience), std::future_status::ready);
  EXPECT_FALSE(accepted.get());
}

TEST(Listener, MoveKeepsTheSocket) {
  Listener a = Listener::bind("127.0.0.1", 0);
  const int fd = a.fd();
  const Listener b(std::move(a));
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(a.fd(), -1);  // NOLINT(bugprone-use-after-move)
}

TEST(Listener, ThousandConnectAcceptCyclesLeakNoDescriptor) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = listener.address().port();
  const int before = test::open_fd_count();
  for (int i = 0; i < 1000; ++i) {
    Connection client = connect("127.0.0.1", port);
    std::optional<Connection> server_side = listener.accept();
    ASSERT_TRUE(server_side.has_value());
    client.write_all("x");
    client.close_write();
    char byte = 0;
    ASSERT_EQ(server_side->read_some(&byte, 1), 1U);
    server_side->close();
  }
  EXPECT_EQ(test::open_fd_count(), before);
}

}  // namespace
}  // namespace sockecho
