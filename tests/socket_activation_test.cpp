// sockecho-server started the way systemd starts a socket-activated service: the listening socket
// at descriptor 3, LISTEN_FDS=1 and LISTEN_PID set to the server's own pid.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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

// A Unix socket as systemd's sockecho-unix.socket makes it: bound, given its mode, listening.
Fd unix_socket_unit(const std::string& path, mode_t mode) {
  const Address address = Address::unix_path(path);
  Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::bind(socket.get(), address.data(), address.size()), 0);
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  EXPECT_EQ(::listen(socket.get(), SOMAXCONN), 0);
  return socket;
}

mode_t mode_of(const std::string& path) {
  struct stat status {};
  EXPECT_EQ(::lstat(path.c_str(), &status), 0) << path;
  return status.st_mode & 07777;
}

std::string ask_unix(const std::string& path, std::string_view message) {
  Connection c = connect(Address::unix_path(path), {test::kPatience, {}});
  c.set_timeout(test::kPatience);
  c.write_all(message);
  c.close_write();
  return c.read_to_end_string();
}

TEST(SocketActivatedServer, AUnixSocketIsServedAndNeverChangedOrRemoved) {
  const test::ScratchDir dir;
  const std::string path = dir.file("sockecho.sock");
  const Fd socket_unit = unix_socket_unit(path, 0604);
  // --unix names another path with its own rules: the inherited socket wins, untouched.
  Child server(activated({"--unix", dir.file("not-this.sock"), "--unix-mode", "0600"}),
               passing({socket_unit.get()}));
  const std::optional<std::string> ready = server.stdout_line();
  ASSERT_TRUE(ready) << server.err();
  EXPECT_EQ(*ready, "listening on unix:" + path);
  EXPECT_TRUE(server.wait_stderr("socket-activation fd=3 listen=unix:" + path)) << server.err();
  EXPECT_EQ(ask_unix(path, "over unix"), kPrefix + "over unix");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_NE(server.err().find(" conn peer=unix:uid="), std::string::npos) << server.err();

  EXPECT_EQ(mode_of(path), 0604U) << "never chmod-ed";
  EXPECT_EQ(::access(dir.file("not-this.sock").c_str(), F_OK), -1) << "nothing bound of its own";
  // Still there and still listening: the next client waits in its queue.
  Connection waiting = connect(Address::unix_path(path), {test::kPatience, {}});
  waiting.write_all("queued");
  waiting.close_write();
  Listener giver{Fd(::dup(socket_unit.get()))};
  std::optional<Connection> queued = giver.accept();
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(queued->read_to_end_string(), "queued");
}

TEST(SocketActivatedServer, AUnixSocketFromSystemdSocketActivate) {
  const std::string activate = "/usr/bin/systemd-socket-activate";
  if (::access(activate.c_str(), X_OK) != 0) GTEST_SKIP() << "no " << activate;
  const test::ScratchDir dir;
  const std::string path = dir.file("activated.sock");
  Child launcher({activate, "--listen=" + path, test::server_program(), "--prefix", "> "});
  ASSERT_TRUE(launcher.wait_stderr("Listening on " + path + " as 3.")) << launcher.err();
  const mode_t mode = mode_of(path);
  // The first connection starts the server, on the socket systemd-socket-activate made.
  EXPECT_EQ(ask_unix(path, "activated"), "> activated");
  const std::optional<std::string> ready = launcher.stdout_line();
  ASSERT_TRUE(ready) << launcher.err();
  EXPECT_EQ(*ready, "listening on unix:" + path);
  launcher.signal(SIGTERM);
  EXPECT_EQ(launcher.wait(), 0) << launcher.err();
  EXPECT_EQ(mode_of(path), mode) << "the socket's file is systemd's, left as it was";
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
            "sockecho-server: LISTEN_FDS=2 (one socket not named 'status' was expected: fd 3 "
            "'unknown', fd 4 'unknown'): Invalid argument\n");
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
