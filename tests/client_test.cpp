#include "sockecho/client.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockecho/listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// A port nothing listens on: bound, then released.
std::uint16_t closed_port() {
  const Listener listener = Listener::bind("127.0.0.1", 0);
  return listener.address().port();
}

using test::make_pipe;
using test::Pipe;
using test::read_all;

TEST(Connect, RefusedNamesTheAddressAndErrno) {
  const std::uint16_t port = closed_port();
  try {
    (void)connect("127.0.0.1", port);
    FAIL() << "connected to a closed port";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_refused);
    EXPECT_EQ(std::string(e.what()),
              "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  }
}

TEST(Connect, TriesEveryAddressOfAName) {
  // The listener is on IPv4 only; whatever order "localhost" resolves in, one address works.
  Listener listener = Listener::bind("127.0.0.1", 0);
  const Connection c = connect("localhost", listener.address().port());
  EXPECT_EQ(c.peer(), listener.address());
}

TEST(Connect, ReturnsANonBlockingCloseOnExecSocketWithNoLimits) {
  Listener listener = Listener::bind("127.0.0.1", 0);
  const Connection c = connect("127.0.0.1", listener.address().port(), 5s);
  const int flags = ::fcntl(c.fd(), F_GETFL);
  EXPECT_NE(flags & O_NONBLOCK, 0);
  EXPECT_EQ(c.timeout().count(), 0) << "the connect timeout is not a limit on the connection";
  EXPECT_NE(::fcntl(c.fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(Connect, TimesOutWhenTheBacklogIsFull) {
  // A listener that never accepts, with the smallest backlog: once its queue is full the kernel
  // drops further SYNs, so a connect can only time out.
  ListenOptions options;
  options.backlog = 1;
  Listener listener = Listener::bind("127.0.0.1", 0, options);
  const std::uint16_t port = listener.address().port();
  std::vector<Connection> queued;
  const auto start = std::chrono::steady_clock::now();
  bool timed_out = false;
  for (int i = 0; i < 16 && !timed_out; ++i) {
    try {
      queued.push_back(connect("127.0.0.1", port, 300ms));
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
      EXPECT_EQ(std::string(e.what()),
                "connect 127.0.0.1:" + std::to_string(port) + ": Connection timed out");
      timed_out = true;
    }
  }
  EXPECT_TRUE(timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(Connect, UnknownHostIsAResolveError) {
  try {
    (void)connect("no-such-host.invalid", 1);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("resolve no-such-host.invalid:1", 0), 0U) << e.what();
  }
}

TEST(Request, RoundTrip) {
  const test::ServerThread server;
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), std::string(kDefaultPrefix) + "hello");
}

TEST(Request, TimesOutOnASilentServer) {
  // Accepts (in the kernel) but never answers.
  Listener listener = Listener::bind("127.0.0.1", 0);
  RequestOptions options;
  options.timeout = 100ms;
  try {
    (void)request("127.0.0.1", listener.address().port(), "x", options);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_EQ(std::string(e.what()).rfind("read 127.0.0.1:", 0), 0U) << e.what();
  }
}

TEST(Request, ReplyLimit) {
  ServerOptions server_options;
  const test::ServerThread server(server_options, prefix_handler(std::string(100, 'p')));
  RequestOptions options;
  options.max_reply = 50;
  try {
    (void)request("127.0.0.1", server.port(), "x", options);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::message_size);
  }
}

TEST(SendReceive, StreamFromADescriptorAndBackToOne) {
  const test::ServerThread server;
  const std::string payload = test::pattern(1 << 20);
  Pipe input = make_pipe();
  std::thread feeder([&] {
    write_all(input.write.get(), payload, "pipe");
    input.write.reset();
  });
  Connection c = connect("127.0.0.1", server.port());
  EXPECT_EQ(send_from_fd(c, input.read.get(), "pipe"), payload.size());
  feeder.join();
  c.close_write();
  Pipe output = make_pipe();
  std::string got;
  std::thread drainer([&] { got = read_all(output.read.get()); });
  EXPECT_EQ(receive_to_fd(c, output.write.get()), kDefaultPrefix.size() + payload.size());
  output.write.reset();
  drainer.join();
  EXPECT_EQ(got, std::string(kDefaultPrefix) + payload);
}

TEST(SendFromFd, ReadErrorNamesTheSource) {
  const test::ServerThread server;
  Connection c = connect("127.0.0.1", server.port());
  try {
    (void)send_from_fd(c, -1, "the-input");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_EQ(std::string(e.what()).rfind("read the-input: ", 0), 0U);
  }
}

// Runs line_session with `input` fed through a pipe; returns what it wrote.
std::string line_session_output(std::uint16_t port, const std::string& input,
                                std::chrono::milliseconds timeout = 5s) {
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  std::string got;
  std::thread drainer([&] { got = read_all(out.read.get()); });
  std::thread feeder([&] {
    write_all(in.write.get(), input, "pipe");
    in.write.reset();
  });
  Connection c = connect("127.0.0.1", port);
  try {
    line_session(c, in.read.get(), out.write.get(), timeout);
  } catch (...) {
    feeder.join();
    out.write.reset();
    drainer.join();
    throw;
  }
  feeder.join();
  out.write.reset();
  drainer.join();
  return got;
}

TEST(LineSession, GreetingThenOneReplyPerLine) {
  const test::ServerThread server(ServerOptions{}, line_protocol(prefix_handler("> ")));
  EXPECT_EQ(line_session_output(server.port(), "a\nbb\n\nlast"),
            "connect\n> a\n> bb\n> \n> last\n");
}

TEST(LineSession, NoInputStillGetsTheGreeting) {
  const test::ServerThread server(ServerOptions{},
                                  line_protocol(prefix_handler(""), Limits{}, "hi there"));
  EXPECT_EQ(line_session_output(server.port(), ""), "hi there\n");
}

TEST(LineSession, ServerThatNeverAnswersTimesOut) {
  Listener listener = Listener::bind("127.0.0.1", 0);  // queues the connection, never greets
  try {
    (void)line_session_output(listener.address().port(), "x\n", 100ms);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
  }
}

TEST(LineSession, ServerClosingWithLinesUnansweredIsAnError) {
  // A limit of 4: the long line ends the connection unanswered.
  const test::ServerThread server(ServerOptions{}, line_protocol(prefix_handler(""), Limits{4}));
  try {
    (void)line_session_output(server.port(), "ok\nthis line is too long\n");
    FAIL();
  } catch (const std::system_error& e) {
    // Closing with the long line unread resets the connection; if the reset loses the race with
    // the close, the session sees the server close with a line owed.
    EXPECT_TRUE(e.code() == std::errc::protocol_error || e.code() == std::errc::connection_reset)
        << e.what();
  }
}

}  // namespace
}  // namespace sockecho
