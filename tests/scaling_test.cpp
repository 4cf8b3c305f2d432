// Several sockecho-server instances on one service: processes sharing a port with --reuseport,
// and instances behind HAProxy in TCP mode (docs/operations.md's recipe), all on loopback.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::FixedPortServer;
using test::ServerProcess;

RequestOptions patient() {
  RequestOptions options;
  options.timeout = test::kPatience;
  return options;
}

// Sends requests until replies with every prefix in `prefixes` have been seen, at most `limit`
// requests; returns the prefixes seen. Each reply must be one of them followed by the message.
std::set<std::string> prefixes_answering(std::uint16_t port, const std::set<std::string>& prefixes,
                                         int limit) {
  std::set<std::string> seen;
  for (int i = 0; i < limit && seen.size() < prefixes.size(); ++i) {
    const std::string message = "request " + std::to_string(i);
    const std::string reply = request("127.0.0.1", port, message, patient());
    bool known = false;
    for (const std::string& prefix : prefixes) {
      if (reply == prefix + message) {
        seen.insert(prefix);
        known = true;
      }
    }
    EXPECT_TRUE(known) << "unexpected reply '" << reply << "'";
    if (!known) break;
  }
  return seen;
}

TEST(ReusePort, TwoServersShareOnePortAndBothServe) {
  ServerProcess first({"--reuseport", "--prefix", "A:"});
  const std::string port = std::to_string(first.port());
  FixedPortServer second({"--reuseport", "--prefix", "B:", "--port", port});
  ASSERT_TRUE(second.ready()) << second.err();
  EXPECT_EQ(*second.ready(), "listening on 127.0.0.1:" + port);
  // The kernel spreads connections over both sockets by a hash of their addresses: 200
  // requests all landing on one of two servers would take a broken --reuseport.
  EXPECT_EQ(prefixes_answering(first.port(), {"A:", "B:"}, 200),
            (std::set<std::string>{"A:", "B:"}));
}

TEST(ReusePort, WithoutItASecondServerOnThePortFails) {
  ServerProcess first;
  FixedPortServer second({"--port", std::to_string(first.port())});
  EXPECT_EQ(second.wait(), 1);
  EXPECT_NE(second.err().find("bind 127.0.0.1:" + std::to_string(first.port()) +
                              ": Address already in use"),
            std::string::npos)
      << second.err();
}

TEST(ReusePort, BothServersMustAskForIt) {
  ServerProcess first;  // without --reuseport
  FixedPortServer second({"--reuseport", "--port", std::to_string(first.port())});
  EXPECT_EQ(second.wait(), 1);
  EXPECT_NE(second.err().find("Address already in use"), std::string::npos) << second.err();
}

TEST(HAProxy, SpreadsRequestsOverTwoServersInTcpMode) {
  const std::optional<std::string> haproxy = test::installed("haproxy");
  if (!haproxy) GTEST_SKIP() << "haproxy is not installed (apt-get install haproxy)";

  ServerProcess one({"--prefix", "one:", "--quiet"});
  ServerProcess two({"--prefix", "two:", "--quiet"});
  // The frontend's socket is bound here, on an ephemeral port, and handed to HAProxy as an
  // inherited descriptor ("bind fd@N"): no port to guess, and connections made before HAProxy
  // is up wait in the backlog. dup() gives a copy without close-on-exec for the child.
  const Listener frontend = Listener::bind("127.0.0.1", 0);
  const Fd inherited(::dup(frontend.fd()));
  ASSERT_TRUE(inherited.valid());

  const test::ScratchDir dir;
  const std::string config = dir.file("haproxy.cfg");
  std::ofstream(config) << test::haproxy_config("fd@" + std::to_string(inherited.get()),
                                                {{one.port()}, {two.port()}});
  const test::RunResult check = test::run({*haproxy, "-c", "-f", config});
  ASSERT_EQ(check.status, 0) << check.out << check.err;

  Child proxy({*haproxy, "-db", "-f", config});
  const std::uint16_t port = frontend.address().port();
  EXPECT_EQ(prefixes_answering(port, {"one:", "two:"}, 20), (std::set<std::string>{"one:", "two:"}))
      << proxy.err();

  // A large request crosses the proxy intact, half-close and all.
  const std::string payload = test::pattern(std::size_t{4} << 20);
  const std::string reply = request("127.0.0.1", port, payload, patient());
  ASSERT_EQ(reply.size(), payload.size() + 4);
  EXPECT_TRUE(reply == "one:" + payload || reply == "two:" + payload);
}

}  // namespace
}  // namespace sockecho
