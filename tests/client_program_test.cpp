// sockecho-client, the program, against servers that stream, reset, close early or never answer:
// what it prints, where, and its exit status.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "client_peers.hpp"
#include "programs.hpp"
#include "sockecho/listener.hpp"
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
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--send", "more than four bytes"}, {"--file", big.path()}}) {
    const RunResult r = client(server.port(), args);
    EXPECT_EQ(r.status, 1) << args[0] << ": " << r.err;
    EXPECT_EQ(r.out, "") << args[0];
    EXPECT_NE(r.err.find("sockecho-client: the server 127.0.0.1:" + std::to_string(server.port()) +
                         " reset the connection: the request was not answered"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("--max-bytes"), std::string::npos) << r.err;
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

}  // namespace
}  // namespace sockecho
