// sockecho-server and sockecho-client as users run them: real processes, real loopback sockets.
#include "programs.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/listener.hpp"
#include "sockecho/version.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::client_program;
using test::RunResult;
using test::server_program;
using test::ServerProcess;

using test::kPrefix;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// sockecho-client --port PORT followed by `args`.
std::vector<std::string> client_argv(std::uint16_t port, std::vector<std::string> args = {}) {
  args.insert(args.begin(), {client_program(), "--port", std::to_string(port)});
  return args;
}

std::string every_byte_value() {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  return bytes;
}

// --- sockecho-server ---

TEST(ServerProgram, ReadyLineNamesTheIpv4AddressAndRealPort) {
  ServerProcess server;
  EXPECT_NE(server.port(), 0);
  EXPECT_EQ(server.ready_line(), "listening on 127.0.0.1:" + std::to_string(server.port()));
}

TEST(ServerProgram, ReadyLineBracketsIpv6) {
  ServerProcess server({"--host", "::1"});
  EXPECT_EQ(server.ready_line(), "listening on [::1]:" + std::to_string(server.port()));
  const RunResult result = test::run(client_argv(server.port(), {"--host", "::1", "--send", "v6"}));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, std::string(kPrefix) + "v6");
  EXPECT_TRUE(contains(result.err, "try to connect to [::1]:" + std::to_string(server.port())))
      << result.err;
}

// Signals and log lines are tested in daemon_programs_test.cpp.

TEST(ServerProgram, PortInUseExitsOneNamingTheAddress) {
  const Listener taken = Listener::bind("127.0.0.1", 0);
  const std::string port = std::to_string(taken.address().port());
  const RunResult result = test::run({server_program(), "--port", port});
  EXPECT_EQ(result.status, 1);
  EXPECT_TRUE(contains(result.err, "bind 127.0.0.1:" + port + ": Address already in use"))
      << result.err;
  EXPECT_EQ(result.out, "");  // no ready line
}

TEST(ServerProgram, HelpGoesToStdout) {
  const RunResult result = test::run({server_program(), "--help"});
  EXPECT_EQ(result.status, 0);
  EXPECT_TRUE(contains(result.out, "Usage: sockecho-server")) << result.out;
  EXPECT_TRUE(contains(result.out, "--port")) << result.out;
  EXPECT_EQ(result.err, "");
}

TEST(ServerProgram, VersionGoesToStdout) {
  const RunResult result = test::run({server_program(), "--version"});
  EXPECT_EQ(result.status, 0);
  EXPECT_EQ(result.out, std::string("sockecho-server ") + kVersion + "\n");
  EXPECT_EQ(result.err, "");
}

TEST(ServerProgram, QuietWithVerboseIsAUsageError) {
  for (const auto& args : {std::vector<std::string>{"--quiet", "--verbose"},
                           std::vector<std::string>{"--verbose", "--quiet"}}) {
    std::vector<std::string> argv{server_program(), "--port", "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    const RunResult result = test::run(argv);
    EXPECT_EQ(result.status, 2) << result.err;
    EXPECT_TRUE(contains(result.err, "--quiet and --verbose cannot be combined")) << result.err;
    EXPECT_EQ(result.out, "");  // no ready line
  }
}

TEST(ServerProgram, GreetingWithoutLineModeIsAUsageError) {
  const RunResult result = test::run({server_program(), "--port", "0", "--greeting", "hi"});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_TRUE(contains(result.err, "--greeting needs --mode line")) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST(ServerProgram, AnEmptyGreetingIsAnEmptyFirstLine) {
  ServerProcess server({"--mode", "line", "--greeting", ""});
  const RunResult result =
      test::run(client_argv(server.port(), {"--mode", "line", "--quiet"}), "a\nb\n");
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "\n" + kPrefix + "a\n" + kPrefix + "b\n");
}

TEST(ServerProgram, TooManyDecimalsSaysHowManyAreAllowed) {
  for (const char* flag : {"--timeout", "--request-timeout", "--exec-timeout"}) {
    const RunResult result = test::run({server_program(), "--port", "0", flag, "0.0001"});
    EXPECT_EQ(result.status, 2) << flag;
    EXPECT_TRUE(contains(result.err, std::string(flag) + ": '0.0001' is not a number of seconds, "
                                                         "at most three decimals"))
        << result.err;
  }
}

// --- sockecho-client ---

TEST(ClientProgram, PrintsExactlyThePrefixedReply) {
  ServerProcess server;
  const RunResult result = test::run(client_argv(server.port(), {"--send", "hello"}));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "数据是 hello");
  EXPECT_EQ(result.out, "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf\x20\x68\x65\x6c\x6c\x6f");
  const std::string port = std::to_string(server.port());
  EXPECT_TRUE(contains(result.err, "try to connect to 127.0.0.1:" + port + "...")) << result.err;
  EXPECT_TRUE(contains(result.err, "sent OK")) << result.err;
}

TEST(ClientProgram, DefaultMessageIsHelloAndNewline) {
  ServerProcess server;
  const RunResult result = test::run(client_argv(server.port()));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, std::string(kPrefix) + "hello\n");
  EXPECT_TRUE(contains(result.err, "sent OK (6 bytes)")) << result.err;
}

TEST(ClientProgram, QuietLeavesStderrEmpty) {
  ServerProcess server;
  const RunResult result = test::run(client_argv(server.port(), {"--quiet", "--send", "shh"}));
  EXPECT_EQ(result.status, 0);
  EXPECT_EQ(result.out, std::string(kPrefix) + "shh");
  EXPECT_EQ(result.err, "");
}

TEST(ClientProgram, EmptyPrefixIsAPureEcho) {
  ServerProcess server({"--prefix", ""});
  const RunResult result = test::run(client_argv(server.port(), {"--send", "plain"}));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "plain");
}

TEST(ClientProgram, SendsAFileByteForByte) {
  ServerProcess server;
  const test::ScratchDir dir;
  const std::string content = every_byte_value() + test::pattern(200000) + std::string(3, '\0');
  const std::string path = dir.write("payload.bin", content);
  const RunResult result = test::run(client_argv(server.port(), {"--file", path}));
  EXPECT_EQ(result.status, 0) << result.err;
  ASSERT_EQ(result.out.size(), kPrefix.size() + content.size());
  EXPECT_TRUE(result.out == std::string(kPrefix) + content) << "payload corrupted";
  EXPECT_TRUE(contains(result.err, "sent OK (" + std::to_string(content.size()) + " bytes)"))
      << result.err;
}

TEST(ClientProgram, SendsStdinByteForByte) {
  ServerProcess server;
  const std::string content = every_byte_value() + test::pattern(100000);
  const RunResult result = test::run(client_argv(server.port(), {"--file", "-"}), content);
  EXPECT_EQ(result.status, 0) << result.err;
  ASSERT_EQ(result.out.size(), kPrefix.size() + content.size());
  EXPECT_TRUE(result.out == std::string(kPrefix) + content) << "payload corrupted";
}

TEST(ClientProgram, SendsAnEmptyFile) {
  ServerProcess server;
  const test::ScratchDir dir;
  const std::string path = dir.write("empty", "");
  const RunResult result = test::run(client_argv(server.port(), {"--file", path}));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, kPrefix);
}

// A --file that cannot be read fails before the client connects: exit 1, a message naming the
// file, and no connection at the server.
void expect_file_refused_unconnected(const std::string& path, const std::string& message) {
  ServerProcess server;
  const RunResult result = test::run(client_argv(server.port(), {"--file", path}));
  EXPECT_EQ(result.status, 1);
  EXPECT_TRUE(contains(result.err, "sockecho-client: open " + path + ": " + message)) << result.err;
  EXPECT_FALSE(contains(result.err, "try to connect")) << result.err;
  EXPECT_EQ(result.out, "");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), std::optional<int>(0));
  EXPECT_TRUE(contains(server.err(), " stop accepted=0 ")) << server.err();
}

TEST(ClientProgram, MissingFileExitsOneBeforeConnecting) {
  const test::ScratchDir dir;
  expect_file_refused_unconnected(dir.file("no-such-file"), "No such file or directory");
}

TEST(ClientProgram, DirectoryAsFileExitsOneBeforeConnecting) {
  const test::ScratchDir dir;
  expect_file_refused_unconnected(dir.path(), "Is a directory");
}

TEST(ClientProgram, PortZeroIsAUsageError) {
  const RunResult result = test::run({client_program(), "--port", "0", "--send", "x"});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_TRUE(contains(result.err, "--port: a client cannot connect to port 0")) << result.err;
  EXPECT_FALSE(contains(result.err, "try to connect")) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST(ClientProgram, ConnectionRefusedExitsOne) {
  std::uint16_t port = 0;
  {
    // A port that was just listening and is now surely closed.
    ServerProcess server;
    port = server.port();
    server.signal(SIGTERM);
    ASSERT_EQ(server.wait(), std::optional<int>(0)) << server.err();
  }
  const RunResult result = test::run(client_argv(port, {"--send", "x"}));
  EXPECT_EQ(result.status, 1);
  EXPECT_TRUE(
      contains(result.err, "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused"))
      << result.err;
  EXPECT_EQ(result.out, "");
}

TEST(ClientProgram, HelpGoesToStdout) {
  const RunResult result = test::run({client_program(), "--help"});
  EXPECT_EQ(result.status, 0);
  EXPECT_TRUE(contains(result.out, "Usage: sockecho-client")) << result.out;
  EXPECT_TRUE(contains(result.out, "--send")) << result.out;
  EXPECT_EQ(result.err, "");
}

TEST(ClientProgram, VersionGoesToStdout) {
  const RunResult result = test::run({client_program(), "--version"});
  EXPECT_EQ(result.status, 0);
  EXPECT_EQ(result.out, std::string("sockecho-client ") + kVersion + "\n");
  EXPECT_EQ(result.err, "");
}

TEST(ClientProgram, SendWithFileIsAUsageError) {
  const RunResult result = test::run({client_program(), "--send", "x", "--file", "-"});
  EXPECT_EQ(result.status, 2);
  EXPECT_TRUE(contains(result.err, "--send")) << result.err;
  EXPECT_TRUE(contains(result.err, "--file")) << result.err;
  EXPECT_EQ(result.out, "");
}

// --- usage errors, both programs ---

class BothPrograms : public testing::TestWithParam<const char*> {
 protected:
  [[nodiscard]] std::string program() const {
    return std::string_view(GetParam()) == "server" ? server_program() : client_program();
  }
};

TEST_P(BothPrograms, BadPortIsAUsageError) {
  for (const char* value : {"-1", "65536", "abc", "", "1.5", " 80", "80 ", "0x50", "+80"}) {
    SCOPED_TRACE(std::string("--port '") + value + "'");
    const RunResult result = test::run({program(), "--port", value});
    EXPECT_EQ(result.status, 2);
    EXPECT_TRUE(contains(result.err, "--port")) << result.err;
    EXPECT_EQ(result.out, "");
  }
}

TEST_P(BothPrograms, BadPortInEqualsFormIsAUsageError) {
  const RunResult result = test::run({program(), "--port=65536"});
  EXPECT_EQ(result.status, 2);
  EXPECT_TRUE(contains(result.err, "--port")) << result.err;
}

TEST_P(BothPrograms, UnknownFlagIsAUsageError) {
  const RunResult result = test::run({program(), "--no-such-flag"});
  EXPECT_EQ(result.status, 2);
  EXPECT_TRUE(contains(result.err, "--no-such-flag")) << result.err;
  EXPECT_TRUE(contains(result.err, "--help")) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST_P(BothPrograms, PositionalArgumentIsAUsageError) {
  const RunResult result = test::run({program(), "stray"});
  EXPECT_EQ(result.status, 2);
  EXPECT_TRUE(contains(result.err, "stray")) << result.err;
}

TEST_P(BothPrograms, FlagMissingItsValueIsAUsageError) {
  for (const char* flag : {"--port", "--host", "--timeout", "--mode"}) {
    SCOPED_TRACE(flag);
    const RunResult result = test::run({program(), flag});
    EXPECT_EQ(result.status, 2);
    EXPECT_TRUE(contains(result.err, flag)) << result.err;
    EXPECT_EQ(result.out, "");
  }
}

TEST_P(BothPrograms, HelpDocumentsTheShortH) {
  const RunResult help = test::run({program(), "--help"});
  const RunResult h = test::run({program(), "-h"});
  EXPECT_EQ(h.status, 0);
  EXPECT_EQ(h.out, help.out);
  EXPECT_TRUE(contains(help.out, "\n  -h, --help         show this help and exit\n")) << help.out;
}

TEST_P(BothPrograms, FlagWithoutValueRejectsOne) {
  const RunResult result = test::run({program(), "--help=yes"});
  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.out, "");
}

INSTANTIATE_TEST_SUITE_P(Programs, BothPrograms, testing::Values("server", "client"),
                         [](const testing::TestParamInfo<const char*>& param) {
                           return std::string(param.param);
                         });

}  // namespace
}  // namespace sockecho
