// sockecho-server started the way systemd starts a socket-activated service: the listening socket
// at descriptor 3, LISTEN_FDS=1 and LISTEN_PID set to the server's own pid.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::activated;
using test::Child;
using test::passing;
using test::SpawnOptions;

using test::kPrefix;

bool non_blocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

TEST(SocketActivatedServer, ServerUsesTheInheritedSocketAndLeavesItListening) {
  Listener socket_unit = Listener::bind("127.0.0.1", 0);  // what systemd's sockecho.socket holds
  const std::uint16_t port = socket_unit.address().port();
  // --host/--port name an address already taken: binding it would fail, so a working server
  // shows the inherited socket was used instead.
  const Listener taken = Listener::bind("127.0.0.1", 0);
  Child server(activated({"--port", std::to_string(taken.address().port())}),
               passing({socket_unit.fd()}));

  const std::optional<std::string> ready = server.stdout_line();
  ASSERT_TRUE(ready) << server.err();
  EXPECT_EQ(*ready, "listening on 127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(server.wait_stderr("socket-activation fd=3 listen=127.0.0.1:" + std::to_string(port)))
      << server.err();
  EXPECT_EQ(request("127.0.0.1", port, "hello\n"), kPrefix + "hello\n");

  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find(" stop accepted=1 ok=1"), std::string::npos) << server.err();

  // The server neither shut the socket down nor left it non-blocking: systemd's copy still
  // listens, and a client that connects now waits in its queue for the next activation.
  EXPECT_FALSE(non_blocking(socket_unit.fd()));
  Connection client = connect("127.0.0.1", port);
  client.write_all("after");
  client.close_write();
  std::optional<Connection> queued = socket_unit.accept();
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(queued->read_to_end_string(), "after");
}

TEST(SocketActivatedServer, AClientQueuedBetweenTwoActivationsIsServedByTheNext) {
  const Listener socket_unit = Listener::bind("127.0.0.1", 0);
  const std::uint16_t port = socket_unit.address().port();
  {
    Child first(activated({}), passing({socket_unit.fd()}));
    ASSERT_TRUE(first.stdout_line()) << first.err();
    first.signal(SIGTERM);
    ASSERT_EQ(first.wait(), 0) << first.err();
  }
  // No server runs now; the kernel completes the connection into the socket's queue.
  Connection waiting = connect("127.0.0.1", port);
  waiting.write_all("queued");
  waiting.close_write();

  Child second(activated({"--prefix", "> "}), passing({socket_unit.fd()}));
  ASSERT_TRUE(second.stdout_line()) << second.err();
  EXPECT_EQ(waiting.read_to_end_string(), "> queued");
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait(), 0) << second.err();
}

TEST(SocketActivatedServer, VariablesForAnotherProcessAreIgnored) {
  const Listener socket_unit = Listener::bind("127.0.0.1", 0);
  SpawnOptions options = passing({socket_unit.fd()});
  options.env.emplace_back("LISTEN_PID=1");  // not the server's pid
  Child server({test::server_program(), "--port", "0"}, options);
  const std::optional<std::string> ready = server.stdout_line();
  ASSERT_TRUE(ready) << server.err();
  const std::uint16_t port = test::port_of(*ready);
  EXPECT_NE(port, 0);
  EXPECT_NE(port, socket_unit.address().port()) << "bound its own socket, as --port 0 asks";
  EXPECT_EQ(request("127.0.0.1", port, "x"), kPrefix + "x");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

TEST(SocketActivatedServer, MoreThanOneSocketIsRefusedClearly) {
  const Listener a = Listener::bind("127.0.0.1", 0);
  const Listener b = Listener::bind("::1", 0);
  Child server(activated({}), passing({a.fd(), b.fd()}));
  EXPECT_EQ(server.wait(), 1);
  EXPECT_EQ(server.out(), "");
  EXPECT_EQ(server.err(),
            "sockecho-server: LISTEN_FDS=2 (a single listening socket was expected): Invalid "
            "argument\n");
}

TEST(SocketActivatedServer, ASocketThatDoesNotListenIsRefusedClearly) {
  const Listener listener = Listener::bind("127.0.0.1", 0);
  const Connection connected = connect("127.0.0.1", listener.address().port());
  Child server(activated({}), passing({connected.fd()}));
  EXPECT_EQ(server.wait(), 1);
  EXPECT_EQ(server.err(),
            "sockecho-server: adopt fd 3 (not a listening stream socket): Invalid argument\n");
}

}  // namespace
}  // namespace sockecho
