// sockecho-server and sockecho-client over --unix: the ready line, echo, line mode and --exec
// through the programs, the socket file's rules as exit codes, its mode and group, the peer's
// credentials in the log, and an administrator's check that the mode keeps other users out.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/address.hpp"
#include "sockecho/fd.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::Child;
using test::kPrefix;
using test::ScratchDir;
using test::ServerProcess;

struct stat status_of(const std::string& path) {
  struct stat status {};
  EXPECT_EQ(::lstat(path.c_str(), &status), 0)
      << path << ": " << std::generic_category().message(errno);
  return status;
}

test::RunResult client(const std::vector<std::string>& args, std::string_view input = {}) {
  std::vector<std::string> argv = {test::client_program()};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv, input);
}

test::RunResult server_run(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {test::server_program()};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

TEST(UnixPrograms, EchoReadyLineAndTheClientsCredentialsInTheLog) {
  const ScratchDir dir;
  const std::string path = dir.file("echo.sock");
  ServerProcess server({"--unix", path});
  EXPECT_EQ(server.ready_line(), "listening on unix:" + path);

  Child sender({test::client_program(), "--unix", path, "--send", "hello unix"});
  EXPECT_EQ(sender.wait(), 0) << sender.err();
  EXPECT_EQ(sender.out(), kPrefix + "hello unix");
  EXPECT_EQ(sender.err().rfind("try to connect to unix:" + path + "...\n", 0), 0U) << sender.err();
  const std::optional<std::string> line = server.wait_stderr(" conn peer=");
  ASSERT_TRUE(line) << server.err();
  EXPECT_NE(line->find(" conn peer=unix:uid=" + std::to_string(::getuid()) +
                       ",pid=" + std::to_string(sender.pid()) + " in=10 "),
            std::string::npos)
      << *line;

  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_FALSE(test::exists(path)) << "a clean stop removes the socket file";
}

TEST(UnixPrograms, LineMode) {
  const ScratchDir dir;
  const std::string path = dir.file("line.sock");
  ServerProcess server({"--unix", path, "--mode", "line", "--prefix", "> "});
  const test::RunResult r = client({"--unix", path, "--mode", "line", "--quiet"}, "one\ntwo\n");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "connect\n> one\n> two\n");
}

TEST(UnixPrograms, ExecGetsTheUcspiUnixEnvironment) {
  const ScratchDir dir;
  const std::string path = dir.file("exec.sock");
  ServerProcess server(
      {"--unix", path, "--exec", "/bin/sh", "-c",
       R"(echo "$PROTO $UNIXLOCALPATH $UNIXREMOTEEUID $UNIXREMOTEEGID $UNIXREMOTEPID [$TCPREMOTEIP]")"});
  Child sender({test::client_program(), "--unix", path, "--send", "", "--quiet"});
  EXPECT_EQ(sender.wait(), 0) << sender.err();
  EXPECT_EQ(sender.out(), "UNIX " + path + " " + std::to_string(::geteuid()) + " " +
                              std::to_string(::getegid()) + " " + std::to_string(sender.pid()) +
                              " []\n");
}

TEST(UnixPrograms, AStaleSocketIsReplacedAndAnInUseOneRefused) {
  const ScratchDir dir;
  const std::string path = dir.file("shared.sock");
  {
    const Address address = Address::unix_path(path);
    const Fd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::bind(stale.get(), address.data(), address.size()), 0);
  }
  ServerProcess first({"--unix", path, "--prefix", "first "});
  const test::RunResult second = server_run({"--unix", path});
  EXPECT_EQ(second.status, 1);
  EXPECT_EQ(second.out, "");
  EXPECT_EQ(second.err, "sockecho-server: bind unix:" + path +
                            " (a server listens there): Address already in use\n");
  const test::RunResult r = client({"--unix", path, "--send", "x", "--quiet"});
  EXPECT_EQ(r.out, "first x") << "the first server keeps its socket";
  first.signal(SIGTERM);
  EXPECT_EQ(first.wait(), 0);
  EXPECT_FALSE(test::exists(path));
}

TEST(UnixPrograms, APathThatIsNotASocketIsLeftUntouched) {
  const ScratchDir dir;
  const std::string path = dir.file("notes.txt");
  std::ofstream(path) << "keep me";
  const test::RunResult r = server_run({"--unix", path});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "sockecho-server: bind unix:" + path +
                       " (not a socket; left untouched): File exists\n");
  EXPECT_EQ(dir.read("notes.txt"), "keep me");
}

// `--unix /run/sockecho/sockecho.sock` pasted on a machine without /run/sockecho: the error names
// the directory to create, for --unix and for --status unix: alike.
TEST(UnixPrograms, AMissingDirectoryIsNamed) {
  const ScratchDir dir;
  const std::string missing = dir.file("run/sockecho");
  const test::RunResult r = server_run({"--unix", missing + "/sockecho.sock"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "sockecho-server: --unix: bind unix:" + missing +
                       "/sockecho.sock: No such file or directory: the directory " + missing +
                       " does not exist (create it first: mkdir -p " + missing +
                       ", or RuntimeDirectory= under systemd)\n");
  const test::RunResult status =
      server_run({"--unix", dir.file("jobs.sock"), "--background", "--status",
                  "unix:" + missing + "/status.sock", "--exec", "true"});
  EXPECT_EQ(status.status, 1);
  EXPECT_EQ(status.err.rfind("sockecho-server: --status: bind unix:" + missing, 0), 0U)
      << status.err;
  EXPECT_NE(status.err.find("the directory " + missing + " does not exist"), std::string::npos)
      << status.err;
  EXPECT_FALSE(test::exists(dir.file("jobs.sock"))) << "nothing left behind";
}

TEST(UnixPrograms, ModeAndGroupOfTheSocketFile) {
  const ScratchDir dir;
  {
    ServerProcess server({"--unix", dir.file("default.sock")});
    EXPECT_EQ(status_of(dir.file("default.sock")).st_mode & 07777, 0660U);
  }
  ServerProcess server({"--unix", dir.file("private.sock"), "--unix-mode", "600"});
  EXPECT_EQ(status_of(dir.file("private.sock")).st_mode & 07777, 0600U);
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file to another group needs root";
  ServerProcess grouped({"--unix", dir.file("grouped.sock"), "--unix-group", "4242"});
  EXPECT_EQ(status_of(dir.file("grouped.sock")).st_gid, 4242U);
}

TEST(UnixPrograms, UsageErrors) {
  const ScratchDir dir;
  const std::string path = dir.file("x.sock");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--unix", path, "--port", "0"},
           {"--host", "::1", "--unix", path},
           {"--unix", path, "--unix-mode", "0999"},
           {"--unix", path, "--unix-mode", "01777"},
           {"--unix-mode", "0600"},
           {"--unix", std::string(Address::kMaxUnixPath + 1, 'p')},
           {"--unix", path, "--unix-group", "no-such-group-sockecho"},
       }) {
    const test::RunResult r = server_run(args);
    EXPECT_EQ(r.status, 2) << args.at(1) << ": " << r.err;
    EXPECT_FALSE(test::exists(path));
  }
  const test::RunResult unknown = server_run({"--unix", path, "--unix-group", "no-such-group-x"});
  EXPECT_EQ(unknown.err, "sockecho-server: --unix-group: unknown group 'no-such-group-x'\n");
  EXPECT_EQ(client({"--unix", path, "--port", "1"}).status, 2);
}

TEST(UnixPrograms, TheClientSaysWhatFailed) {
  const ScratchDir dir;
  const test::RunResult r = client({"--unix", dir.file("nobody-here.sock"), "--quiet"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "sockecho-client: connect unix:" + dir.file("nobody-here.sock") +
                       ": No such file or directory\n");
}

// What an administrator checks: --unix-mode 0660 and a group keep every other user out. A child
// becomes user nobody (uid and gid 65534, no supplementary groups) and runs sockecho-client.
TEST(UnixPrograms, AUserOutsideTheModeAndGroupIsDenied) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching to user nobody needs root";
  const ScratchDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);  // the directory lets everyone through
  const std::string path = dir.file("guarded.sock");
  ServerProcess server({"--unix", path, "--unix-mode", "0660", "--unix-group", "4242"});
  const std::string as_nobody =
      R"(exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@")";
  test::RunResult denied = test::run({"/bin/sh", "-c", as_nobody, test::client_program(), "--unix",
                                      path, "--send", "in?", "--quiet"});
  if (denied.err.find("setpriv") != std::string::npos) GTEST_SKIP() << denied.err;
  EXPECT_EQ(denied.status, 1);
  EXPECT_EQ(denied.out, "");
  EXPECT_EQ(denied.err, "sockecho-client: connect unix:" + path + ": Permission denied\n");

  // With the mode open to others, the same user gets in: the mode was what kept it out.
  ServerProcess open({"--unix", dir.file("open.sock"), "--unix-mode", "0666"});
  const test::RunResult let_in =
      test::run({"/bin/sh", "-c", as_nobody, test::client_program(), "--unix",
                 dir.file("open.sock"), "--send", "in?", "--quiet"});
  EXPECT_EQ(let_in.status, 0) << let_in.err;
  EXPECT_EQ(let_in.out, kPrefix + "in?");
  EXPECT_NE(open.wait_stderr(" conn peer=unix:uid=65534,")->size(), 0U) << open.err();
}

TEST(UnixPrograms, MaxPerSourceCountsPerUser) {
  const ScratchDir dir;
  const std::string path = dir.file("per-user.sock");
  ServerProcess server({"--unix", path, "--max-per-source", "1", "--mode", "line"});
  // A line-mode session holds this user's one connection while it waits for input.
  Child holder({test::client_program(), "--unix", path, "--mode", "line", "--quiet"});
  ASSERT_EQ(holder.stdout_line(), "connect") << holder.err();
  const test::RunResult second = client({"--unix", path, "--mode", "line", "--quiet"}, "x\n");
  EXPECT_EQ(second.status, 1) << "refused: " << second.out;
  const std::optional<std::string> refused = server.wait_stderr("outcome=refused");
  ASSERT_TRUE(refused) << server.err();
  EXPECT_NE(refused->find("peer=unix:uid=" + std::to_string(::getuid()) + ","), std::string::npos);
  EXPECT_NE(refused->find("reason=per_source"), std::string::npos) << *refused;
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0) << holder.err();
}

}  // namespace
}  // namespace sockecho
