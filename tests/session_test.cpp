// Protocols plug into the Server: the document's two through their own objects, and a third,
// length-prefixed one defined here alone, served by the same Server with no change to it.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include "sockecho/client.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// Frames of a two-byte big-endian length and that many bytes. Each frame is answered with a
// frame of the same bytes reversed; a frame of length 0 ends the session. Longer frames than
// the limit end the connection with outcome too_large.
class Reversed final : public Protocol {
 public:
  explicit Reversed(std::size_t max_frame) : max_frame_(max_frame) {}

  void serve(Connection& connection, Workspace& workspace) override {
    for (;;) {
      std::array<char, 2> header{};
      if (!read_exactly(connection, header.data(), header.size())) return;  // closed: done
      const std::size_t size =
          (static_cast<std::size_t>(static_cast<unsigned char>(header[0])) << 8) |
          static_cast<unsigned char>(header[1]);
      if (size == 0) return;
      if (size > max_frame_) {
        throw ConnectionError(Outcome::too_large, "frame of " + std::to_string(size) + " bytes");
      }
      workspace.buffer.clear();
      workspace.buffer.reserve(size);
      if (!read_exactly(connection, workspace.buffer.tail(), size)) {
        throw ConnectionError(Outcome::error, "closed inside a frame");
      }
      workspace.buffer.commit(size);
      std::string reply(workspace.buffer.view().rbegin(), workspace.buffer.view().rend());
      const std::array<std::string_view, 2> parts = {std::string_view(header.data(), 2), reply};
      connection.write_all(parts.data(), parts.size());
    }
  }

  [[nodiscard]] std::string describe() const override {
    return "mode=reversed max_frame=" + std::to_string(max_frame_);
  }

 private:
  // False at end of stream before the first byte; a stream that ends later is an error.
  static bool read_exactly(Connection& connection, char* data, std::size_t size) {
    std::size_t got = 0;
    while (got < size) {
      const std::size_t n = connection.read_some(data + got, size - got);
      if (n == 0) {
        if (got == 0) return false;
        throw ConnectionError(Outcome::error, "closed inside a frame");
      }
      got += n;
    }
    return true;
  }

  std::size_t max_frame_;
};

std::string frame(std::string_view payload) {
  std::string out;
  out += static_cast<char>(payload.size() >> 8);
  out += static_cast<char>(payload.size() & 0xff);
  out += payload;
  return out;
}

ServerOptions two_workers(std::chrono::milliseconds timeout = 10s) {
  ServerOptions options;
  options.workers = 2;
  options.timeout = timeout;
  return options;
}

TEST(ThirdProtocol, LengthPrefixedFramesAreServedByTheSameServer) {
  test::ServerThread server(two_workers(), std::make_shared<Reversed>(64));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  c.set_timeout(test::kPatience);
  c.write_all(frame("abc") + frame("hello") + frame(""));
  EXPECT_EQ(c.read_to_end_string(), frame("cba") + frame("olleh"));
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::ok) << record.detail;
  EXPECT_EQ(record.bytes_in, 2U + 3 + 2 + 5 + 2);
  EXPECT_EQ(record.bytes_out, 2U + 3 + 2 + 5);
}

TEST(ThirdProtocol, ItsOwnOutcomesReachTheRecordsAndCounters) {
  test::ServerThread server(two_workers(), std::make_shared<Reversed>(4));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  c.write_all(frame("12345"));
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::too_large);
  EXPECT_EQ(record.detail, "frame of 5 bytes");
  EXPECT_EQ(server.server().stats().count(Outcome::too_large), 1U);
}

TEST(ThirdProtocol, TheServersIdleLimitAppliesToItToo) {
  test::ServerThread server(two_workers(200ms), std::make_shared<Reversed>(64));
  Connection c = connect("127.0.0.1", server.port(), test::kPatience);
  c.write_all(std::string_view("\0", 1));  // half a header, then silence
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::timeout) << record.detail;
  EXPECT_GE(record.duration, 200ms);
  EXPECT_LT(record.duration, 200ms + Connection::kProgressCheck + 500ms);
}

TEST(DocumentProtocols, DescribeThemselvesForTheStartLine) {
  EXPECT_EQ(echo_protocol(prefix_handler(""), Limits{1024, 0ms, 4096})->describe(),
            "mode=echo max_bytes=1024 max_total_bytes=4096 request_timeout_ms=0");
  EXPECT_EQ(line_protocol(prefix_handler(""))->describe(),
            "mode=line max_bytes=" + std::to_string(kDefaultMaxBytes) + " max_total_bytes=" +
                std::to_string(kDefaultMaxTotalBytes) + " request_timeout_ms=30000");
}

TEST(DocumentProtocols, AnEmptyHandlerIsRefused) {
  EXPECT_THROW((void)echo_protocol(Handler()), std::invalid_argument);
  EXPECT_THROW((void)line_protocol(Handler()), std::invalid_argument);
}

TEST(DocumentProtocols, OneProtocolObjectServesTwoServers) {
  const std::shared_ptr<Protocol> shared = echo_protocol(prefix_handler("> "));
  test::ServerThread first(two_workers(), shared);
  test::ServerThread second(two_workers(), shared);
  EXPECT_EQ(request("127.0.0.1", first.port(), "a"), "> a");
  EXPECT_EQ(request("127.0.0.1", second.port(), "b"), "> b");
}

}  // namespace
}  // namespace sockecho
