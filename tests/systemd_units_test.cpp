// The systemd units in packaging/systemd/ against the program they start: the service's command
// line works, and the socket unit listens where the service would.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/server.hpp"
#include "sockecho/systemd.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

const std::string kUnitDir = std::string(SOCKECHO_SOURCE_DIR) + "/packaging/systemd/";

// Every value of `key` in a unit file ("key=value" lines outside comments), in order.
std::vector<std::string> values(const std::string& unit, const std::string& key) {
  std::ifstream file(kUnitDir + unit);
  if (!file) throw std::runtime_error("cannot read " + kUnitDir + unit);
  std::vector<std::string> found;
  for (std::string line; std::getline(file, line);) {
    if (line.rfind(key + "=", 0) == 0) found.push_back(line.substr(key.size() + 1));
  }
  return found;
}

std::string value(const std::string& unit, const std::string& key) {
  const std::vector<std::string> all = values(unit, key);
  if (all.size() != 1) {
    throw std::runtime_error(unit + " should set " + key + "= once, not " +
                             std::to_string(all.size()) + " times");
  }
  return all.front();
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

// The flags of the service's ExecStart=, after the program.
std::vector<std::string> exec_start_flags() {
  const std::string command = value("sockecho.service.in", "ExecStart");
  // systemd would unquote; the test splits on blanks, so the line must not need quoting.
  EXPECT_EQ(command.find_first_of("\"'\\$%"), std::string::npos) << command;
  std::vector<std::string> flags = words(command);
  EXPECT_EQ(flags.at(0), "@SOCKECHO_BINDIR@/sockecho-server");
  flags.erase(flags.begin());
  return flags;
}

std::string flag_value(const std::vector<std::string>& flags, const std::string& flag) {
  for (std::size_t i = 0; i + 1 < flags.size(); ++i) {
    if (flags[i] == flag) return flags[i + 1];
  }
  return {};
}

TEST(SystemdUnits, ServiceCommandLineStartsTheServer) {
  std::vector<std::string> flags = exec_start_flags();
  ASSERT_FALSE(flags.empty());
  // The same flags, then --port 0 (the last --port wins) so the test takes no fixed port.
  test::ServerProcess server(flags);
  EXPECT_EQ(request("127.0.0.1", server.port(), "unit\n"),
            std::string(kServerDefaultPrefix) + "unit\n");
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(SystemdUnits, SocketListensWhereTheServiceWouldBind) {
  const std::vector<std::string> flags = exec_start_flags();
  const std::string host = flag_value(flags, "--host");
  const std::string port = flag_value(flags, "--port");
  ASSERT_FALSE(host.empty());
  ASSERT_FALSE(port.empty());
  EXPECT_EQ(value("sockecho.socket", "ListenStream"), join_host_port(host, parse_port(port)))
      << "both ways of running the service should serve the same address";
}

TEST(SystemdUnits, SocketPassesOneListeningSocket) {
  // sockecho-server serves exactly one inherited socket, and serves it with its own workers.
  EXPECT_EQ(values("sockecho.socket", "ListenStream").size(), 1U);
  EXPECT_TRUE(values("sockecho.socket", "ListenDatagram").empty());
  EXPECT_EQ(value("sockecho.socket", "Accept"), "no");
}

TEST(SystemdUnits, UnixSocketUnitPassesOneGuardedUnixSocketToTheService) {
  const std::string unit = "sockecho-unix.socket";
  ASSERT_EQ(values(unit, "ListenStream").size(), 1U) << "sockecho-server serves one socket";
  const std::string path = value(unit, "ListenStream");
  EXPECT_EQ(path.rfind("/run/sockecho/", 0), 0U) << path;
  EXPECT_NO_THROW((void)Address::unix_path(path)) << "fits sun_path";
  EXPECT_TRUE(values(unit, "ListenDatagram").empty());
  EXPECT_EQ(value(unit, "Accept"), "no");
  EXPECT_EQ(value(unit, "Service"), "sockecho.service");
  EXPECT_EQ(value(unit, "SocketMode"), "0660") << "the owner and SocketGroup= only";
  EXPECT_FALSE(value(unit, "SocketGroup").empty());
}

// The whole text of a unit file, comments too.
std::string text_of(const std::string& unit) {
  std::ifstream file(kUnitDir + unit);
  if (!file) throw std::runtime_error("cannot read " + kUnitDir + unit);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(SystemdUnits, StatusSocketUnitPassesALoopbackSocketNamedStatusToTheService) {
  const std::string unit = "sockecho-status.socket";
  ASSERT_EQ(values(unit, "ListenStream").size(), 1U) << "one status listener";
  const std::string listen = value(unit, "ListenStream");
  const std::string loopback = "127.0.0.1:";
  ASSERT_EQ(listen.rfind(loopback, 0), 0U) << listen << ": anyone who connects may ask about "
                                           << "and cancel jobs, so only this host's users";
  EXPECT_GT(parse_port(listen.substr(loopback.size())), 0) << listen;
  EXPECT_NE(listen, value("sockecho.socket", "ListenStream")) << "not the main socket's address";
  EXPECT_TRUE(values(unit, "ListenDatagram").empty());
  EXPECT_EQ(value(unit, "FileDescriptorName"), std::string(kStatusSocketName))
      << "the name inherited_sockets() takes the status socket by";
  EXPECT_EQ(value(unit, "Service"), "sockecho.service");
  EXPECT_EQ(value(unit, "Accept"), "no");
  // What the comments tell the administrator to add to ExecStart= is this unit's address.
  const std::string text = text_of(unit);
  EXPECT_NE(text.find("--status " + listen), std::string::npos);
  EXPECT_NE(text.find("--background"), std::string::npos);
}

TEST(SystemdUnits, NoMainSocketUnitIsNamedStatus) {
  // Beside sockecho-status.socket, a main socket named "status" would be taken for a second
  // status socket.
  for (const std::string unit : {"sockecho.socket", "sockecho-unix.socket"}) {
    for (const std::string& name : values(unit, "FileDescriptorName")) {
      EXPECT_NE(name, kStatusSocketName) << unit;
    }
  }
}

// systemd's own check (`systemd-analyze verify`, as CI runs it on the installed package) of each
// socket unit beside the service: known keys and valid values (a FileDescriptorName= with a
// colon, say), and a Service= that exists.
TEST(SystemdUnits, SystemdAcceptsEachSocketUnitWithTheService) {
  const std::optional<std::string> analyze = test::installed("systemd-analyze");
  if (!analyze) GTEST_SKIP() << "systemd-analyze is not installed";
  const test::ScratchDir dir;
  // The service as installed, naming the built server (verify checks that ExecStart's program
  // exists).
  std::string service = text_of("sockecho.service.in");
  const std::string server = test::server_program();
  const std::string bindir = server.substr(0, server.rfind('/'));
  for (std::size_t at; (at = service.find("@SOCKECHO_BINDIR@")) != std::string::npos;) {
    service.replace(at, std::string("@SOCKECHO_BINDIR@").size(), bindir);
  }
  const std::string service_path = dir.write("sockecho.service", service);
  for (const std::string unit :
       {"sockecho.socket", "sockecho-unix.socket", "sockecho-status.socket"}) {
    const std::string socket_path = dir.write(unit, text_of(unit));
    // --man=no: the man page of Documentation= is checked by manpage_test, not installed here.
    const test::RunResult verify =
        test::run({*analyze, "verify", "--man=no", socket_path, service_path});
    EXPECT_EQ(verify.status, 0) << unit << ": " << verify.err;
    EXPECT_EQ(verify.out + verify.err, "") << unit;
  }
}

TEST(SystemdUnits, StopTimeoutOutlastsTheLongestDrain) {
  // On SIGTERM a connection in flight may still take its whole request (--request-timeout) and
  // then a reply that stalls for --timeout (+0.5 s): systemd must wait longer than both before
  // it sends SIGKILL.
  const std::string timeout = flag_value(exec_start_flags(), "--timeout");
  const std::string request_timeout = flag_value(exec_start_flags(), "--request-timeout");
  ASSERT_FALSE(timeout.empty());
  ASSERT_FALSE(request_timeout.empty());
  EXPECT_GT(std::stol(value("sockecho.service.in", "TimeoutStopSec")),
            std::stol(request_timeout) + std::stol(timeout) + 1);
}

TEST(SystemdUnits, TheStopSignalGoesToTheServerAlone) {
  // The server ends its programs and jobs itself; systemd's default (control-group) would send
  // SIGTERM to each running job program at `systemctl stop`.
  EXPECT_EQ(value("sockecho.service.in", "KillMode"), "mixed");
}

TEST(SystemdUnits, ServiceIsHardened) {
  for (const auto& [key, expected] : std::vector<std::pair<std::string, std::string>>{
           {"DynamicUser", "yes"},
           {"NoNewPrivileges", "yes"},
           {"ProtectSystem", "strict"},
           {"ProtectHome", "yes"},
           {"PrivateTmp", "yes"},
           {"PrivateDevices", "yes"},
           {"CapabilityBoundingSet", ""},
           {"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
       }) {
    EXPECT_EQ(value("sockecho.service.in", key), expected) << key;
  }
}

// The background drop-in: its command line starts the server, its jobs are kept in a spool, and
// its stop timeout outlasts the longest run.
TEST(SystemdUnits, BackgroundDropInSpoolsItsJobsAndWaitsForTheLongestRun) {
  const std::vector<std::string> exec = values("background.conf", "ExecStart");
  ASSERT_EQ(exec.size(), 2U);
  EXPECT_EQ(exec.at(0), "") << "a drop-in must reset ExecStart= first";
  std::vector<std::string> flags = words(exec.at(1));
  ASSERT_EQ(flags.at(0), "/usr/bin/sockecho-server");
  flags.erase(flags.begin());
  const auto number = [&](const std::string& flag) {
    const std::string v = flag_value(flags, flag);
    EXPECT_FALSE(v.empty()) << flag;
    return v.empty() ? 0L : std::stol(v);
  };
  const long jobs = number("--jobs");
  const long queue = number("--queue");
  ASSERT_GT(jobs, 0);
  // With a spool a stop waits for the running jobs only (their run and its grace); without
  // one, for every accepted job, the queued ones too.
  const bool spooled = !flag_value(flags, "--spool").empty();
  EXPECT_TRUE(spooled) << "the drop-in keeps its jobs in a spool";
  EXPECT_EQ(flag_value(flags, "--spool").rfind("%S/sockecho/", 0), 0U) << "in the StateDirectory";
  const long rounds = spooled ? 1 : (jobs + queue + jobs - 1) / jobs;
  const long drain = rounds * (number("--exec-timeout") + 2) + number("--request-timeout") +
                     number("--timeout") + 1;
  EXPECT_GT(std::stol(value("background.conf", "TimeoutStopSec")), drain);
  EXPECT_EQ(value("background.conf", "StateDirectory"), "sockecho");

  // The same flags, with a program that exists here and a free port, start the real server.
  const test::ScratchDir state;
  std::vector<std::string> args(flags.begin(), std::find(flags.begin(), flags.end(), "--exec"));
  for (std::string& a : args) {
    if (a.rfind("%S/", 0) == 0) a = state.file(a.substr(3));  // systemd's %S: /var/lib
  }
  // Its jobs can be asked about, on loopback; here on a free port.
  const auto status = std::find(args.begin(), args.end(), "--status");
  ASSERT_NE(status, args.end()) << "the drop-in serves a status listener";
  ASSERT_NE(status + 1, args.end());
  EXPECT_EQ(status[1].rfind("127.0.0.1:", 0), 0U) << "on loopback";
  status[1] = "127.0.0.1:0";
  ASSERT_EQ(::mkdir(state.file("sockecho").c_str(), 0700), 0);
  args.insert(args.end(), {"--port", "0", "--exec", "cat"});
  test::ServerProcess server(args);
  EXPECT_EQ(request("127.0.0.1", server.port(), "job").rfind("accepted ", 0), 0U);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

}  // namespace
}  // namespace sockecho
