// sockecho-client, the program, against servers that stream, reset, close early or never answer:
// what it prints, where, and its exit status.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "client_peers.hpp"
#include "programs.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/protocol.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::client_program;
using test::RunResult;

// Runs sockecho-client against 127.0.0.1:port with `args` and stdin `input`.
RunResult client(std::uint16_t port, std::vector<std::string> args, std::string_view input = {}) {
  args.insert(args.begin(), {client_program(), "--port", std::to_string(port)});
  return test::run(args, input);
}

// A request the server always ends before the client has sent it all.
const std::size_t kCutRequest = test::larger_than_any_send_buffer();

// A file holding `bytes`, removed by the destructor.
class TempFile {
 public:
  explicit TempFile(std::string_view bytes) : path_(testing::TempDir() + "sockecho-XXXXXX") {
    const Fd fd(::mkstemp(path_.data()));
    if (!fd) throw os_error(errno, "mkstemp " + path_);
    write_all(fd.get(), bytes, path_);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  TempFile(TempFile&&) = delete;
  TempFile& operator=(TempFile&&) = delete;
  ~TempFile() { ::unlink(path_.c_str()); }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ClientAgainstAStreamingServer, A16MiBFileComesBackByteForByte) {
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::Streaming>());
  const std::string payload = test::pattern(std::size_t{16} << 20);
  const TempFile file(payload);
  const RunResult r = client(server.port(), {"--file", file.path(), "--timeout", "20"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.size(), payload.size());
  EXPECT_TRUE(r.out == payload);
  EXPECT_NE(r.err.find("sent OK (16777216 bytes)"), std::string::npos) << r.err;
}

TEST(ClientAgainstAStreamingServer, StdinToo) {
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::Streaming>());
  const std::string payload = test::pattern(std::size_t{4} << 20);
  const RunResult r = client(server.port(), {"--file", "-", "--quiet"}, payload);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out == payload);
}

TEST(ClientAgainstAResettingServer, ExitsOneWithNothingOnStdoutAndSaysWhy) {
  const test::ServerThread server(ServerOptions{}, std::make_shared<test::ResetAfter>(4));
  const TempFile big(test::pattern(std::size_t{4} << 20));
  const std::string reset =
      "sockecho-client: the server 127.0.0.1:" + std::to_string(server.port()) +
      " reset the connection: ";
  // A short message is sent whole before the reset, which leaves it unanswered; a large file is
  // cut while it is being sent.
  for (const auto& [args, what] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--send", "more than four bytes"}, "the request was not answered ("},
           {{"--file", big.path()}, "request cut after "}}) {
    const RunResult r = client(server.port(), args);
    EXPECT_EQ(r.status, 1) << args[0] << ": " << r.err;
    EXPECT_EQ(r.out, "") << args[0];
    EXPECT_NE(r.err.find(reset + what), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--max-bytes"), std::string::npos) << r.err;
  }
}

TEST(ClientAgainstAServerEndingFirst, AHalfCloseCutsTheRequestAndNamesBothSizes) {
  auto ends = std::make_shared<test::EndsFirst>(1000, test::EndsFirst::How::half_close);
  test::ServerThread server(test::small_window_listener(), ServerOptions{}, ends);
  const TempFile big(test::pattern(kCutRequest));
  const RunResult r = client(server.port(), {"--file", big.path(), "--quiet"});
  ends->release();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  const std::string peer = "127.0.0.1:" + std::to_string(server.port());
  EXPECT_EQ(r.err, "sockecho-client: the server " + peer +
                       " ended the connection first: request cut after " +
                       std::to_string(ends->received()) + " of " + std::to_string(kCutRequest) +
                       " bytes (read " + peer + ": end of stream)\n");
  EXPECT_GE(ends->received(), 1000U);
}

TEST(ClientAgainstAServerEndingFirst, FromStdinTheSizeIsUnknown) {
  auto ends = std::make_shared<test::EndsFirst>(1000, test::EndsFirst::How::half_close);
  test::ServerThread server(test::small_window_listener(), ServerOptions{}, ends);
  const RunResult r = client(server.port(), {"--file", "-", "--quiet"}, test::pattern(kCutRequest));
  ends->release();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(": request cut after " + std::to_string(ends->received()) + " bytes (read "),
            std::string::npos)
      << r.err;
}

TEST(ClientAgainstAServerEndingFirst, ACloseCutsTheRequestToo) {
  // The close is a reset when request bytes are left unread, an end of stream when not: either
  // way the request was cut.
  auto ends = std::make_shared<test::EndsFirst>(1000, test::EndsFirst::How::close);
  test::ServerThread server(test::small_window_listener(), ServerOptions{}, ends);
  const TempFile big(test::pattern(kCutRequest));
  const RunResult r = client(server.port(), {"--file", big.path(), "--quiet"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, "");
  const std::regex cut(": request cut after ([0-9]+) of " + std::to_string(kCutRequest) +
                       R"( bytes \((read|write) 127\.0\.0\.1:[0-9]+: )");
  std::smatch found;
  ASSERT_TRUE(std::regex_search(r.err, found, cut)) << r.err;
  EXPECT_GE(std::stoull(found[1]), 1000U) << r.err;
}

TEST(ClientAgainstAServerEndingFirst, AServerThatReadsItAllStillGetsA3MBRequestWhole) {
  const test::ServerThread server;
  const std::string payload = test::pattern(3000000);
  const TempFile file(payload);
  for (const bool from_stdin : {false, true}) {
    const RunResult r = from_stdin ? client(server.port(), {"--file", "-", "--quiet"}, payload)
                                   : client(server.port(), {"--file", file.path(), "--quiet"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(r.out == test::kPrefix + payload) << (from_stdin ? "stdin" : "file");
  }
}

TEST(ClientTimeout, NamesTheFlagAndTheLimit) {
  const Listener silent = Listener::bind("127.0.0.1", 0);  // queued by the kernel, never served
  const RunResult r = client(silent.address().port(), {"--timeout", "0.25", "--quiet"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("sockecho-client: timed out waiting for the server 127.0.0.1:"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("no progress for 0.25 s (--timeout)"), std::string::npos) << r.err;
}

TEST(ClientLineMode, AServerClosingWithALineUnansweredIsExitOne) {
  for (const bool with_reset : {false, true}) {
    const test::ServerThread server(ServerOptions{},
                                    std::make_shared<test::LinesThenClose>(2, 1, with_reset));
    const RunResult r = client(server.port(), {"--mode", "line", "--quiet"}, "a\nb\n");
    EXPECT_EQ(r.status, 1) << (with_reset ? "reset: " : "FIN: ") << r.err;
    EXPECT_NE(r.err.find("1 lines unanswered"), std::string::npos)
        << (with_reset ? "reset: " : "FIN: ") << r.err;
    EXPECT_EQ(r.out, "hi\nre\n") << "the answers that came are printed";
  }
}

TEST(ClientLineMode, AServerClosingBeforeTheInputEndsIsExitOne) {
  // Greets, closes at once, while the client's input is still open (nothing typed yet): what it
  // would send can never be answered.
  const test::ServerThread server(ServerOptions{},
                                  std::make_shared<test::LinesThenClose>(0, 0, false));
  test::Child c(
      {client_program(), "--port", std::to_string(server.port()), "--mode", "line", "--quiet"});
  EXPECT_EQ(c.stdout_line(), "hi");
  EXPECT_EQ(c.wait(), 1) << c.err();
  EXPECT_NE(c.err().find("closed with 0 lines unanswered, input left unsent"), std::string::npos)
      << c.err();
}

// sockecho-client started with `closed` (some of 0, 1, 2) closed, as some supervisors start
// programs, against 127.0.0.1:port.
test::Child client_with_closed(std::uint16_t port, std::vector<std::string> args,
                               std::vector<int> closed) {
  args.insert(args.begin(), {client_program(), "--port", std::to_string(port)});
  test::SpawnOptions options;
  options.closed = std::move(closed);
  return {args, options};
}

TEST(ClientStartedWithADescriptorClosed, StdinClosedIsAnEmptyRequestNotItsOwnSocket) {
  // Read from its own socket, the request would never end: the server's idle limit would.
  ServerOptions options;
  options.timeout = 2s;
  test::ServerThread server(options);
  test::Child c = client_with_closed(server.port(), {"--file", "-", "--quiet"}, {STDIN_FILENO});
  EXPECT_EQ(c.wait(), 0) << c.err();
  EXPECT_EQ(c.out(), test::kPrefix);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).bytes_in, 0U);
}

TEST(ClientStartedWithADescriptorClosed, StderrClosedCostsTheStatusLinesOnly) {
  // Its socket on 2, the status line after the half-close would be written into it.
  const test::ServerThread server;
  test::Child c = client_with_closed(server.port(), {"--send", "hi"}, {STDERR_FILENO});
  EXPECT_EQ(c.wait(), 0);
  EXPECT_EQ(c.out(), test::kPrefix + "hi");
}

TEST(ClientStartedWithADescriptorClosed, StdoutClosedInEchoModeCostsTheReplyOnly) {
  test::ServerThread server;
  test::Child c = client_with_closed(server.port(), {"--send", "hi"}, {STDOUT_FILENO});
  EXPECT_EQ(c.wait(), 0) << c.err();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).bytes_in, 2U);
}

TEST(ClientStartedWithADescriptorClosed, StdoutClosedInLineModeSendsNoReplyBack) {
  // Its socket on 1, every reply would go back to the server as a line of its own, growing by
  // the prefix each round (1.4 GB a second). The server's 4 KiB line limit bounds that in bytes,
  // the client's exit in time.
  std::mutex mutex;
  std::vector<std::string> lines;
  const auto record = [&](const Request& request, Reply& reply) {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      lines.emplace_back(request.bytes());
    }
    reply.append(request.bytes());
  };
  Limits limits;
  limits.max_bytes = 4096;
  test::ServerThread server(ServerOptions{}, line_protocol(record, limits));
  test::Child c = client_with_closed(server.port(), {"--mode", "line", "--quiet"}, {STDOUT_FILENO});
  c.write_stdin("a\n");
  // The input stays open until the server has answered it, so a reply sent back has the time
  // to arrive before the end.
  ASSERT_TRUE(test::eventually([&] {
    const std::lock_guard<std::mutex> lock(mutex);
    return !lines.empty();
  }));
  c.close_stdin();
  EXPECT_EQ(c.wait(5s), 0) << c.err();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).bytes_in, 2U);
  const std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(lines, std::vector<std::string>{"a"});
}

TEST(ClientStdout, AReaderGoneIsExitOneWithAMessageNotSigpipe) {
  for (const bool line_mode : {false, true}) {
    const test::ServerThread server(
        ServerOptions{}, line_mode
                             ? line_protocol(prefix_handler(std::string(kServerDefaultPrefix)))
                             : echo_protocol(prefix_handler(std::string(kServerDefaultPrefix))));
    test::Pipe gone = test::make_pipe();
    gone.read.reset();
    test::SpawnOptions options;
    options.fds = {{gone.write.get(), 3}};
    // The shell puts the pipe on stdout and becomes the client.
    test::Child c({"/bin/sh", "-c", R"(exec "$0" "$@" >&3)", client_program(), "--port",
                   std::to_string(server.port()), "--mode", line_mode ? "line" : "echo", "--quiet"},
                  options);
    gone.write.reset();
    c.write_stdin("a\n");
    c.close_stdin();
    EXPECT_EQ(c.wait(), 1) << c.err();
    EXPECT_EQ(c.err(), "sockecho-client: write output: Broken pipe\n")
        << (line_mode ? "line mode" : "echo mode");
  }
}

}  // namespace
}  // namespace sockecho
