// sockecho-server --exec as a user meets it: the real binaries, a program per request, and the
// command lines refused at start.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::RunResult;
using test::ServerProcess;

RunResult server_with(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {test::server_program(), "--port", "0"};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

TEST(ExecProgram, EveryArgumentAfterExecIsTheProgramsAndThePrefixIsEmpty) {
  // "--timeout" after --exec belongs to the program: printf prints it.
  ServerProcess server({"--exec", "sh", "-c", R"(printf '%s|' "$0" "$1"; cat)", "--timeout", "x"});
  EXPECT_EQ(request("127.0.0.1", server.port(), "hello"), "--timeout|x|hello");
}

TEST(ExecProgram, AnExplicitPrefixStillApplies) {
  ServerProcess server({"--prefix", "> ", "--exec", "cat"});
  const std::string port = std::to_string(server.port());
  const RunResult r =
      test::run({test::client_program(), "--port", port, "--quiet", "--send", "job"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "> job");
}

TEST(ExecProgram, AFailedProgramIsAResetTheClientExitsOneAndTheLogSaysWhy) {
  ServerProcess server({"--exec", "sh", "-c", "echo broken >&2; exit 3"});
  const RunResult r = test::run(
      {test::client_program(), "--port", std::to_string(server.port()), "--quiet", "--send", "x"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  ASSERT_TRUE(server.wait_stderr(" outcome=failed exit=3 ")) << server.err();
  EXPECT_NE(server.err().find(" stderr: broken"), std::string::npos) << server.err();
}

TEST(ExecProgram, UnusableCommandLinesAreUsageErrors) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--exec", "sockecho-no-such-program"},
           {"--exec", "/dev/null"},  // exists, not an executable file
           {"--exec"},
           {"--mode", "line", "--exec", "cat"},
           {"--max-output", "1K"},
       }) {
    const RunResult r = server_with(args);
    EXPECT_EQ(r.status, 2) << args.back() << ": " << r.err;
    EXPECT_EQ(r.out, "") << "no ready line";
    EXPECT_NE(r.err.find("sockecho-server: "), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace sockecho
