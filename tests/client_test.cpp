#include "sockecho/client.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "client_peers.hpp"
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
  EXPECT_TRUE(test::close_on_exec(c.fd()));
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
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"),
            std::string(kServerDefaultPrefix) + "hello");
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

TEST(Request, AStreamingServerAt16MiBComesBackWhole) {
  // The server writes each chunk back as it reads it, so request() must read while it writes:
  // at this size both directions' kernel buffers fill long before the request ends.
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::Streaming>());
  const std::string payload = test::pattern(std::size_t{16} << 20);
  RequestOptions options;
  options.timeout = test::kPatience;
  const std::string reply = request("127.0.0.1", server.port(), payload, options);
  EXPECT_EQ(reply.size(), payload.size());
  EXPECT_TRUE(reply == payload);
}

TEST(Request, AResetIsAnError) {
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::ResetAfter>(4));
  for (const std::size_t size : {std::size_t{10}, std::size_t{4} << 20}) {
    try {
      (void)request("127.0.0.1", server.port(), test::pattern(size));
      FAIL() << size << " bytes: a reset was taken for a reply";
    } catch (const std::system_error& e) {
      // Sending when the reset arrives: EPIPE or ECONNRESET, whichever the write met first.
      EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe)
          << size << " bytes: " << e.what();
    }
  }
}

// A client function's input and output as pipes: one thread feeds `input` into the first and
// closes it, another collects whatever is written to the second. collect() closes the writing
// end and returns what arrived; the destructor cleans up the same way when a test ends early.
class PipedIo {
 public:
  explicit PipedIo(std::string input)
      : drainer_([this] { got_ = read_all(out_.read.get()); }),
        feeder_([this, bytes = std::move(input)] {
          test::block_sigpipe_in_this_thread();
          try {
            write_all(in_.write.get(), bytes, "pipe");
          } catch (const std::system_error&) {  // the function under test stopped reading
          }
          in_.write.reset();
        }) {}
  PipedIo(const PipedIo&) = delete;
  PipedIo& operator=(const PipedIo&) = delete;
  PipedIo(PipedIo&&) = delete;
  PipedIo& operator=(PipedIo&&) = delete;
  ~PipedIo() { finish(); }

  [[nodiscard]] int input() const noexcept { return in_.read.get(); }
  [[nodiscard]] int output() const noexcept { return out_.write.get(); }
  std::string collect() {
    finish();
    return got_;
  }

 private:
  void finish() {
    in_.read.reset();  // a feeder still writing gets EPIPE and stops
    if (feeder_.joinable()) feeder_.join();
    out_.write.reset();
    if (drainer_.joinable()) drainer_.join();
  }

  Pipe in_ = make_pipe();
  Pipe out_ = make_pipe();
  std::string got_;
  std::thread drainer_;
  std::thread feeder_;
};

// Runs exchange() from a pipe fed with `input` to a pipe; returns what arrived there.
std::string exchange_through_pipes(std::uint16_t port, const std::string& input, Exchanged& counts,
                                   std::uint64_t& sent_at_half_close) {
  PipedIo io(input);
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  counts = exchange(c, Source::descriptor(io.input(), "pipe"), io.output(),
                    [&](std::uint64_t sent) { sent_at_half_close = sent; });
  return io.collect();
}

TEST(Exchange, FromAPipeToAPipeAgainstAStreamingServer) {
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::Streaming>());
  const std::string payload = test::pattern(std::size_t{4} << 20);
  Exchanged counts;
  std::uint64_t sent = 0;
  EXPECT_TRUE(exchange_through_pipes(server.port(), payload, counts, sent) == payload);
  EXPECT_EQ(counts.sent, payload.size());
  EXPECT_EQ(counts.received, payload.size());
  EXPECT_EQ(sent, payload.size());
}

TEST(Exchange, TheDocumentsServerAnswersAfterTheHalfClose) {
  const test::ServerThread server;
  Exchanged counts;
  std::uint64_t sent = 0;
  EXPECT_EQ(exchange_through_pipes(server.port(), "hello", counts, sent),
            std::string(kServerDefaultPrefix) + "hello");
  EXPECT_EQ(sent, 5U);
}

TEST(Exchange, AMessageFromMemory) {
  const test::ServerThread server;
  Connection c = connect("127.0.0.1", server.port());
  Pipe out = make_pipe();
  const Exchanged counts = exchange(c, Source::bytes("abc"), out.write.get());
  out.write.reset();
  EXPECT_EQ(read_all(out.read.get()), std::string(kServerDefaultPrefix) + "abc");
  EXPECT_EQ(counts.sent, 3U);
  EXPECT_EQ(counts.received, kServerDefaultPrefix.size() + 3);
}

TEST(Exchange, ReadErrorNamesTheSource) {
  const test::ServerThread server;
  Connection c = connect("127.0.0.1", server.port());
  const Fd unreadable(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(unreadable);
  try {
    (void)exchange(c, Source::descriptor(unreadable.get(), "the-input"), -1);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_EQ(std::string(e.what()).rfind("read the-input: ", 0), 0U) << e.what();
  }
}

TEST(Exchange, WaitingForInputIsNotTimedButTheServerIs) {
  // A silent server and an input that is slow to come: the time the input takes does not count,
  // the wait for the server after it does.
  Listener listener = Listener::bind("127.0.0.1", 0);
  Pipe in = make_pipe();
  Connection c = connect("127.0.0.1", listener.address().port());
  c.set_timeout(100ms);
  const auto start = std::chrono::steady_clock::now();
  std::thread feeder([&] {
    std::this_thread::sleep_for(300ms);  // ok-sleep: the slow input this test is about
    write_all(in.write.get(), "late", "pipe");
    in.write.reset();
  });
  try {
    (void)exchange(c, Source::descriptor(in.read.get(), "pipe"), -1);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("read 127.0.0.1:", 0), 0U) << e.what();
  }
  feeder.join();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 400ms);
}

TEST(Exchange, AServerEndingFirstCutsTheRequest) {
  auto ends = std::make_shared<test::EndsFirst>(1000, test::EndsFirst::How::half_close);
  test::ServerThread server(test::small_window_listener(), ServerOptions{}, ends);
  const std::string message = test::pattern(test::larger_than_any_send_buffer());
  Connection c = connect("127.0.0.1", server.port());
  c.set_timeout(test::kPatience);
  const std::string peer = c.peer().to_string();
  Pipe out = make_pipe();
  try {
    (void)exchange(c, Source::bytes(message), out.write.get());
    FAIL() << "a cut request was taken for a whole one";
  } catch (const RequestCut& e) {
    c.close();
    ends->release();
    ASSERT_TRUE(server.wait_finished(1));
    EXPECT_EQ(e.sent(), ends->received());
    EXPECT_EQ(e.size(), message.size());
    EXPECT_FALSE(e.reset());
    EXPECT_EQ(e.code(), std::errc::broken_pipe);
    EXPECT_EQ(std::string(e.what()), "request cut after " + std::to_string(e.sent()) + " of " +
                                         std::to_string(message.size()) + " bytes (read " + peer +
                                         ": end of stream)");
  }
  out.write.reset();
  EXPECT_EQ(read_all(out.read.get()), "");
}

// Reads the request up to `bytes` bytes, answers "got it" and closes, without waiting for the
// client's half-close.
class AnswersAt final : public Protocol {
 public:
  explicit AnswersAt(std::size_t bytes) : bytes_(bytes) {}
  void serve(Connection& connection, Workspace& /*workspace*/) override {
    std::vector<char> chunk(bytes_);
    std::size_t got = 0;
    while (got < bytes_) {
      const std::size_t n = connection.read_some(chunk.data() + got, bytes_ - got);
      if (n == 0) break;
      got += n;
    }
    connection.write_all("got it");
  }
  [[nodiscard]] std::string describe() const override { return "mode=answers-at"; }

 private:
  std::size_t bytes_;
};

TEST(Exchange, AServerEndingBeforeTheInputEndsCutsItEvenWithAllOfItSent) {
  // Every byte read so far was sent, but the input has not ended: the server cannot have seen
  // the whole request. What it sent before its end stays on the output.
  const test::ServerThread server(ServerOptions{}, std::make_shared<AnswersAt>(5));
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  write_all(in.write.get(), "hello", "pipe");
  Connection c = connect("127.0.0.1", server.port());
  c.set_timeout(test::kPatience);
  try {
    (void)exchange(c, Source::descriptor(in.read.get(), "pipe"), out.write.get());
    FAIL() << "a request whose input had not ended was taken for a whole one";
  } catch (const RequestCut& e) {
    EXPECT_EQ(e.sent(), 5U);
    EXPECT_EQ(e.size(), std::nullopt);
    EXPECT_EQ(std::string(e.what()).rfind("request cut after 5 bytes (read 127.0.0.1:", 0), 0U)
        << e.what();
  }
  out.write.reset();
  EXPECT_EQ(read_all(out.read.get()), "got it");
}

// Runs line_session with `input` fed through a pipe; returns what it wrote.
std::string line_session_output(std::uint16_t port, const std::string& input,
                                std::chrono::milliseconds timeout = 5s) {
  PipedIo io(input);
  Connection c = connect("127.0.0.1", port);
  line_session(c, io.input(), io.output(), timeout);
  return io.collect();
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

TEST(LineSession, ServerClosingOrResettingWithALineUnansweredIsAnError) {
  // Reads both lines, answers one, then closes with a FIN or resets.
  for (const bool with_reset : {false, true}) {
    const test::ServerThread server(ServerOptions{},
                                    std::make_shared<test::LinesThenClose>(2, 1, with_reset));
    try {
      (void)line_session_output(server.port(), "a\nb\n");
      FAIL() << "with_reset " << with_reset;
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), with_reset ? std::errc::connection_reset : std::errc::protocol_error)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(" with 1 lines unanswered"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace sockecho
