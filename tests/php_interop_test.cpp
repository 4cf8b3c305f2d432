// Interop with the blog post's own language: PHP clients and servers written the way the post
// writes them (tests/php/*.php, plus the half-close fix) against sockecho-server and
// sockecho-client. Skipped when `php` with the sockets extension is not installed.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "programs.hpp"
#include "sockecho/fd.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::Child;
using test::RunResult;
using test::ServerProcess;

using test::kPrefix;

const std::string kPhpDir = SOCKECHO_PHP_DIR;

// The full path of `php` found on PATH; empty if there is none.
std::string find_php() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  std::string_view rest = path;
  while (true) {
    const std::size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/php";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) return {};
    rest.remove_prefix(colon + 1);
  }
}

struct PhpStatus {
  std::string program;  // full path of php
  std::string missing;  // why the tests cannot run; empty when they can
};

const PhpStatus& php_status() {
  static const PhpStatus status = [] {
    PhpStatus s;
    s.program = find_php();
    if (s.program.empty()) {
      s.missing = "php is not on PATH (install php-cli with the sockets extension)";
      return s;
    }
    try {
      const RunResult check =
          test::run({s.program, "-r", "exit(function_exists('socket_create') ? 0 : 1);"});
      if (check.status != 0) {
        s.missing = s.program + " lacks the sockets extension (exit " +
                    std::to_string(check.status) + "): " + check.err;
      }
    } catch (const std::exception& e) {
      s.missing = s.program + " cannot be run: " + e.what();
    }
    return s;
  }();
  return status;
}

// Whether this machine can listen on the IPv6 loopback address.
bool ipv6_loopback_works() {
  const Fd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_addr = in6addr_loopback;
  return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
}

class PhpInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!php_status().missing.empty()) GTEST_SKIP() << php_status().missing;
  }

  static const std::string& php() { return php_status().program; }

  // tests/php/client.php: sends `message`, half-closes (unless --no-shutdown is in `extra`),
  // prints the reply.
  static RunResult php_client(const std::string& host, std::uint16_t port, std::string_view message,
                              const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {php(), kPhpDir + "/client.php", host, std::to_string(port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return test::run(argv, message);
  }
};

// A one-shot program's exit status and stderr, for failure messages.
std::string show(const RunResult& result) {
  return "exit " + std::to_string(result.status) + ", stderr: " + result.err;
}

// ---- the post's PHP client (plus the half-close) against sockecho-server ----

TEST_F(PhpInterop, PhpClientGetsThePrefixedReplyFromSockechoServer) {
  ServerProcess server;
  const RunResult result = php_client("127.0.0.1", server.port(), "hello");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + "hello");
}

TEST_F(PhpInterop, PhpClientOverAUnixSocket) {
  const test::ScratchDir dir;
  const std::string path = dir.file("php.sock");
  ServerProcess server({"--unix", path});
  const std::string message = test::pattern(std::size_t{1} << 20);
  const RunResult result = php_client("unix:" + path, 0, message);
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_TRUE(result.out == kPrefix + message) << "reply of " << result.out.size() << " bytes";
  EXPECT_TRUE(server.wait_stderr(" conn peer=unix:uid=")) << server.err();
}

TEST_F(PhpInterop, PhpClientEmptyMessageGetsThePrefixAlone) {
  ServerProcess server;
  const RunResult result = php_client("127.0.0.1", server.port(), "");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix);
}

TEST_F(PhpInterop, PhpClientAllByteValuesComeBackIntact) {
  ServerProcess server;
  std::string message;
  for (int value = 0; value < 256; ++value) message.push_back(static_cast<char>(value));
  const RunResult result = php_client("127.0.0.1", server.port(), message);
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + message);
}

TEST_F(PhpInterop, PhpClientOneMebibyteComesBackIntact) {
  ServerProcess server;
  const std::string message = test::pattern(std::size_t{1} << 20);
  const RunResult result = php_client("127.0.0.1", server.port(), message);
  ASSERT_EQ(result.status, 0) << show(result);
  ASSERT_EQ(result.out.size(), kPrefix.size() + message.size());
  EXPECT_TRUE(result.out == kPrefix + message) << "reply differs from prefix + message";
}

TEST_F(PhpInterop, PhpClientWithEmptyPrefixGetsAPureEcho) {
  ServerProcess server({"--prefix", ""});
  const RunResult result = php_client("127.0.0.1", server.port(), "hello");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, "hello");
}

// The post's `while ($buf = socket_read(...))` would stop at the chunk "0" and lose it.
TEST_F(PhpInterop, PhpClientReplyThatIsTheStringZeroIsNotEndOfStream) {
  ServerProcess server({"--prefix", ""});
  const RunResult result = php_client("127.0.0.1", server.port(), "0");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, "0");
}

TEST_F(PhpInterop, PhpClientOverIpv6) {
  if (!ipv6_loopback_works()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  ServerProcess server({"--host", "::1"});
  EXPECT_NE(server.ready_line().find("[::1]:"), std::string::npos) << server.ready_line();
  const RunResult result = php_client("::1", server.port(), "hello over IPv6");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + "hello over IPv6");
}

TEST_F(PhpInterop, PhpClientConnectFailureExitsOneWithTheReason) {
  // A port held by a socket that is bound but not listening: connecting to it is refused, and no
  // other test can take it meanwhile.
  const Fd holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(holder.valid());
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);

  const RunResult result = php_client("127.0.0.1", ntohs(address.sin_port), "hello");
  EXPECT_EQ(result.status, 1);
  EXPECT_EQ(result.out, "");
  EXPECT_NE(result.err.find("socket_connect() failed: Connection refused"), std::string::npos)
      << result.err;
}

// ---- sockecho-client against the post's PHP server ----

// tests/php/server.php on an ephemeral loopback port, serving `connections` and then exiting.
class PhpServer {
 public:
  PhpServer(const std::string& php, int connections, const std::string& host = "127.0.0.1")
      : child_({php, kPhpDir + "/server.php", host, "0", std::to_string(connections)}) {
    const std::optional<std::string> line = child_.stdout_line();
    if (line) ready_ = *line;
    port_ = test::port_of(ready_);
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& ready_line() const { return ready_; }
  Child& child() { return child_; }

 private:
  Child child_;
  std::string ready_;
  std::uint16_t port_ = 0;
};

RunResult sockecho_client(std::uint16_t port, const std::vector<std::string>& args,
                          std::string_view input = {}, const std::string& host = "127.0.0.1") {
  std::vector<std::string> argv = {test::client_program(), "--host", host, "--port",
                                   std::to_string(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv, input);
}

TEST_F(PhpInterop, SockechoClientGetsThePrefixedReplyFromPhpServer) {
  PhpServer server(php(), 1);
  ASSERT_NE(server.port(), 0) << "ready line '" << server.ready_line()
                              << "', stderr: " << server.child().err();
  EXPECT_EQ(server.ready_line(), "listening on 127.0.0.1:" + std::to_string(server.port()));
  const RunResult result = sockecho_client(server.port(), {"--send", "hello"});
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + "hello");
  EXPECT_EQ(server.child().wait(), 0) << server.child().err();
}

TEST_F(PhpInterop, SockechoClientSendsABinaryFileToPhpServer) {
  PhpServer server(php(), 1);
  ASSERT_NE(server.port(), 0) << server.child().err();
  std::string content;
  for (int value = 0; value < 256; ++value) content.push_back(static_cast<char>(value));
  content += test::pattern(100'000);
  const std::string path =
      ::testing::TempDir() + "sockecho_php_interop_" + std::to_string(::getpid()) + ".bin";
  {
    std::ofstream file(path, std::ios::binary);
    file.write(content.data(), static_cast<std::streamsize>(content.size()));
    ASSERT_TRUE(file.good()) << "cannot write " << path;
  }
  const RunResult result = sockecho_client(server.port(), {"--file", path});
  (void)std::remove(path.c_str());
  ASSERT_EQ(result.status, 0) << show(result);
  ASSERT_EQ(result.out.size(), kPrefix.size() + content.size());
  EXPECT_TRUE(result.out == kPrefix + content) << "reply differs from prefix + file";
  EXPECT_EQ(server.child().wait(), 0) << server.child().err();
}

// The PHP server reads in 8192-byte chunks: messages on and around that size must be whole.
TEST_F(PhpInterop, SockechoClientMessagesAroundThePhpChunkSizeRoundTrip) {
  constexpr std::size_t kChunk = 8192;
  const std::vector<std::size_t> sizes = {kChunk - 1, kChunk, kChunk + 1, 2 * kChunk};
  PhpServer server(php(), static_cast<int>(sizes.size()));
  ASSERT_NE(server.port(), 0) << server.child().err();
  for (const std::size_t size : sizes) {
    SCOPED_TRACE("message of " + std::to_string(size) + " bytes");
    const std::string message = test::pattern(size);
    const RunResult result = sockecho_client(server.port(), {"--file", "-"}, message);
    ASSERT_EQ(result.status, 0) << show(result);
    ASSERT_EQ(result.out.size(), kPrefix.size() + size);
    EXPECT_TRUE(result.out == kPrefix + message) << "reply differs from prefix + message";
  }
  // It served exactly the connections it was told to and stopped by itself.
  EXPECT_EQ(server.child().wait(), 0) << server.child().err();
}

// The post's server loop would stop reading at the chunk "0" and answer the prefix alone.
TEST_F(PhpInterop, SockechoClientMessageThatIsTheStringZeroReachesPhpServer) {
  PhpServer server(php(), 1);
  ASSERT_NE(server.port(), 0) << server.child().err();
  const RunResult result = sockecho_client(server.port(), {"--send", "0"});
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + "0");
  EXPECT_EQ(server.child().wait(), 0) << server.child().err();
}

TEST_F(PhpInterop, SockechoClientOverIpv6ToPhpServer) {
  if (!ipv6_loopback_works()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  PhpServer server(php(), 1, "::1");
  ASSERT_NE(server.port(), 0) << "ready line '" << server.ready_line()
                              << "', stderr: " << server.child().err();
  EXPECT_EQ(server.ready_line(), "listening on [::1]:" + std::to_string(server.port()));
  const RunResult result = sockecho_client(server.port(), {"--send", "hello"}, {}, "::1");
  ASSERT_EQ(result.status, 0) << show(result);
  EXPECT_EQ(result.out, kPrefix + "hello");
  EXPECT_EQ(server.child().wait(), 0) << server.child().err();
}

// ---- the post's deadlock ----

// The post's client never half-closes, so the server never sees end of stream and never answers:
// each side waits for the other. Here the client gives up after 1 s (SO_RCVTIMEO) while the server
// would wait 2 s; the very same client with the half-close gets its answer at once.
TEST_F(PhpInterop, WithoutTheHalfCloseThePostsClientGetsNoReply) {
  ServerProcess server({"--timeout", "2"});

  const auto start = std::chrono::steady_clock::now();
  const RunResult stuck = php_client("127.0.0.1", server.port(), "hello", {"--no-shutdown"});
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_NE(stuck.status, 0) << "the client without half-close got an answer: " << stuck.out;
  EXPECT_EQ(stuck.out, "");
  // It failed by waiting for a reply that never came, not on connecting or writing.
  EXPECT_NE(stuck.err.find("socket_read() failed"), std::string::npos) << stuck.err;
  EXPECT_GE(waited, std::chrono::milliseconds(900));

  const RunResult fixed = php_client("127.0.0.1", server.port(), "hello");
  ASSERT_EQ(fixed.status, 0) << show(fixed);
  EXPECT_EQ(fixed.out, kPrefix + "hello");
}

}  // namespace
}  // namespace sockecho
