// The one handler type: a Request in, a Reply whose outcome is a value out, honoured alike by the
// echo and line protocols over real connections (the datagram server's side is in
// datagram_server_test).
#include "sockecho/handler.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "sockecho/client.hpp"
#include "sockecho/protocol.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::ServerThread;

std::string joined(const Reply& reply) {
  std::vector<std::string_view> pieces;
  reply.pieces(pieces);
  std::string out;
  for (const std::string_view piece : pieces) out += piece;
  return out;
}

// Reads what the server sends until it closes: the bytes, and whether it ended with a reset.
std::pair<std::string, bool> read_until_closed(Connection& connection) {
  std::string got;
  std::array<char, 4096> chunk{};
  try {
    for (;;) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) return {got, false};
      got.append(chunk.data(), n);
    }
  } catch (const std::system_error& e) {
    if (!test::is_reset(e.code())) throw;
    return {got, true};
  }
}

// One echo-mode exchange: `text` sent and half-closed, then read_until_closed().
std::pair<std::string, bool> exchange(std::uint16_t port, std::string_view text) {
  Connection c = connect("127.0.0.1", port);
  c.set_timeout(test::kPatience);
  c.write_all(text);
  c.close_write();
  return read_until_closed(c);
}

TEST(Reply, IsAnAnswerOfOutcomeOkUntilToldOtherwise) {
  Reply reply;
  EXPECT_TRUE(reply.answered());
  EXPECT_EQ(reply.outcome(), Outcome::ok);
  reply.set_outcome(Outcome::refused, "reason=busy");
  EXPECT_TRUE(reply.answered());
  EXPECT_EQ(reply.outcome(), Outcome::refused);
  EXPECT_EQ(reply.fields(), "reason=busy");
  reply.fail(Outcome::failed, "it failed", "exit=1");
  EXPECT_FALSE(reply.answered());
  EXPECT_EQ(reply.detail(), "it failed");
  EXPECT_EQ(reply.fields(), "exit=1");
  reply.clear();
  EXPECT_TRUE(reply.answered());
  EXPECT_EQ(reply.outcome(), Outcome::ok);
  EXPECT_TRUE(reply.fields().empty());
  EXPECT_TRUE(reply.detail().empty());
}

TEST(Reply, TruncateDropsWhatCameAfterASize) {
  Reply reply;
  const std::string kept = "kept ";
  reply.append_ref(kept);
  reply.append("owned ");
  const std::size_t mark = reply.size();
  reply.append("dropped");
  reply.append_ref(kept);
  reply.truncate(mark);
  EXPECT_EQ(joined(reply), "kept owned ");
  EXPECT_EQ(reply.size(), mark);
  reply.append("again");  // the owned bytes after the mark were given back too
  EXPECT_EQ(joined(reply), "kept owned again");
}

TEST(Request, KnowsItsPeerAndTheAddressItCameTo) {
  const Address peer = resolve("127.0.0.2", 4000)[0];
  const Address local = resolve("127.0.0.1", 0)[0];
  const Request request("hi", peer, local);
  EXPECT_EQ(request.bytes(), "hi");
  EXPECT_EQ(request.peer(), peer);
  EXPECT_EQ(request.local(), local);
}

TEST(Request, OverAConnectionTheLocalAddressIsTheConnections) {
  std::string seen;
  ServerThread server({}, [&seen](const Request& request, Reply& reply) {
    seen = request.local().to_string() + " " + request.peer().host();
    reply.append_ref(request.bytes());
  });
  EXPECT_EQ(request("127.0.0.1", server.port(), "x"), "x");
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(seen, "127.0.0.1:" + std::to_string(server.port()) + " 127.0.0.1");
}

TEST(EchoOutcome, AnAnswerThatIsNoSuccessIsSentWholeAndClosedCleanly) {
  ServerThread server({}, test::outcome_handler);
  const auto [got, reset] = exchange(server.port(), "busy");
  EXPECT_EQ(got, "try later");
  EXPECT_FALSE(reset);
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::refused);
  EXPECT_EQ(record.fields, "reason=busy");
}

TEST(EchoOutcome, AFailedReplyIsNotSentAndTheConnectionIsReset) {
  ServerThread server({}, test::outcome_handler);
  const auto [got, reset] = exchange(server.port(), "boom");
  EXPECT_EQ(got, "") << "nothing of a failed reply goes out";
  EXPECT_TRUE(reset);
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::failed);
  EXPECT_EQ(record.fields, "exit=3");
  EXPECT_EQ(record.detail, "boom failed");
  EXPECT_EQ(server.server().stats().count(Outcome::failed), 1U);
}

TEST(LineOutcome, ALineAnsweredWithoutSuccessIsTheLastAndTheCloseIsClean) {
  ServerThread server({}, line_protocol(test::outcome_handler));
  Connection c = connect("127.0.0.1", server.port());
  c.set_timeout(test::kPatience);
  c.write_all("a\nbusy\nnever answered\n");
  const auto [got, reset] = read_until_closed(c);
  EXPECT_EQ(got, "connect\na\ntry later\n");
  EXPECT_FALSE(reset);
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(server.records().at(0).outcome, Outcome::refused);
  EXPECT_EQ(server.records().at(0).fields, "reason=busy");
}

TEST(LineOutcome, AFailedLineEndsTheSessionUnansweredAfterTheRepliesBeforeIt) {
  ServerThread server({}, line_protocol(test::outcome_handler));
  Connection c = connect("127.0.0.1", server.port());
  c.set_timeout(test::kPatience);
  c.write_all("a\nb\n");
  // The lines before are answered; read them before the failing one, since the reset that ends
  // the session may overtake bytes still in flight.
  const std::string before = "connect\na\nb\n";
  std::string got;
  std::array<char, 64> chunk{};
  while (got.size() < before.size()) {
    const std::size_t n = c.read_some(chunk.data(), chunk.size());
    ASSERT_NE(n, 0U) << got;
    got.append(chunk.data(), n);
  }
  EXPECT_EQ(got, before);
  c.write_all("boom\nnever answered\n");
  const auto [after, reset] = read_until_closed(c);
  EXPECT_EQ(after.find("half"), std::string::npos) << "nothing of a failed reply goes out";
  EXPECT_EQ(after.find("never"), std::string::npos) << "no line after it is answered";
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(record.outcome, Outcome::failed);
  EXPECT_EQ(record.detail, "boom failed");
  EXPECT_EQ(record.fields, "exit=3");
  (void)reset;  // a reset, or the end of a stream whose reset came after it was read
}

}  // namespace
}  // namespace sockecho
