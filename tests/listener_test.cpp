#include "sockecho/listener.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

bool close_on_exec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

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
  EXPECT_TRUE(close_on_exec(listener.fd()));
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
  EXPECT_TRUE(close_on_exec(accepted->fd()));
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
  EXPECT_TRUE(close_on_exec(adopted.fd()));
  Connection client = connect("127.0.0.1", port);
  EXPECT_TRUE(adopted.accept().has_value());
}

TEST(Listener, RefusesToAdoptASocketThatIsNotListening) {
  Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket.valid());
  try {
    const Listener listener{std::move(socket)};
    FAIL() << "adopted a socket that does not listen";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
  }
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
