#include "sockecho/connection.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "sockecho/buffer.hpp"
#include "sockecho/client.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/protocol.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;

// Both ends of one loopback TCP connection.
struct Pair {
  Connection client;
  Connection server;
};

Pair make_pair(const std::string& host = "127.0.0.1") {
  Listener listener = Listener::bind(host, 0);
  Connection client = connect(host, listener.address().port());
  std::optional<Connection> server = listener.accept();
  EXPECT_TRUE(server.has_value());
  return {std::move(client), std::move(*server)};
}

TEST(Connection, DefaultIsClosed) {
  const Connection c;
  EXPECT_FALSE(c.is_open());
  EXPECT_EQ(c.fd(), -1);
}

TEST(Connection, WriteThenHalfCloseThenReadToEnd) {
  Pair p = make_pair();
  p.client.write_all("hello");
  p.client.close_write();
  EXPECT_EQ(p.server.read_to_end_string(), "hello");
  p.server.write_all("back");
  p.server.close();
  EXPECT_EQ(p.client.read_to_end_string(), "back");
  EXPECT_EQ(p.client.bytes_written(), 5U);
  EXPECT_EQ(p.client.bytes_read(), 4U);
}

TEST(Connection, MoveKeepsTheSocketAndCounters) {
  Pair p = make_pair();
  p.client.write_all("abc");
  const int fd = p.client.fd();
  Connection moved(std::move(p.client));
  EXPECT_EQ(moved.fd(), fd);
  EXPECT_EQ(moved.bytes_written(), 3U);
  EXPECT_FALSE(p.client.is_open());  // NOLINT(bugprone-use-after-move)
}

TEST(Connection, GatheredWriteSendsPartsInOrderSkippingEmptyOnes) {
  Pair p = make_pair();
  const std::string big = test::pattern(300000);
  const std::array<std::string_view, 7> parts = {"", "head:", "", big, "", ":tail", ""};
  std::thread writer([&] {
    p.client.write_all(parts.data(), parts.size());
    p.client.close_write();
  });
  const std::string got = p.server.read_to_end_string();
  writer.join();
  EXPECT_EQ(got, "head:" + big + ":tail");
}

TEST(Connection, ManyPartsBeyondOneSendmsg) {
  Pair p = make_pair();
  std::vector<std::string> strings;
  std::vector<std::string_view> parts;
  std::string expected;
  strings.reserve(200);
  parts.reserve(200);
  for (int i = 0; i < 200; ++i) strings.push_back(std::to_string(i) + ",");
  for (const auto& s : strings) {
    parts.emplace_back(s);
    expected += s;
  }
  p.client.write_all(parts.data(), parts.size());
  p.client.close_write();
  EXPECT_EQ(p.server.read_to_end_string(), expected);
}

TEST(Connection, TenMebibytesLoopOverPartialWrites) {
  Pair p = make_pair();
  const std::string payload = test::pattern(10 << 20);
  std::thread writer([&] {
    p.client.write_all(payload);
    p.client.close_write();
  });
  Buffer buffer;
  EXPECT_TRUE(p.server.read_to_end(buffer));
  writer.join();
  EXPECT_EQ(buffer.size(), payload.size());
  EXPECT_TRUE(buffer.view() == payload);
}

TEST(Connection, WriteSomeStopsAtAFullSendBufferAndResumesWhereItStopped) {
  // Parts larger than the kernel's buffers, with empty ones between: the first call stops
  // part-way through, having moved its place past exactly what was sent; calls from there after
  // the peer has read send the rest, and the stream read is the parts in order, once each.
  Pair p = make_pair();
  const std::string big = test::pattern(6 << 20);
  const std::array<std::string_view, 5> parts = {"head:", "", big, "", ":tail"};
  Connection::Progress at;
  EXPECT_FALSE(p.client.write_some(parts.data(), parts.size(), at));
  EXPECT_EQ(at.index, 2U);
  EXPECT_GT(at.offset, 0U);
  EXPECT_LT(at.offset, big.size());
  EXPECT_EQ(p.client.bytes_written(), 5U + at.offset);
  std::thread writer([&] {
    while (!p.client.write_some(parts.data(), parts.size(), at)) p.client.wait(POLLOUT, "write");
    p.client.close_write();
  });
  const std::string got = p.server.read_to_end_string();
  writer.join();
  EXPECT_EQ(at.index, parts.size());
  EXPECT_TRUE(got == "head:" + big + ":tail");
  EXPECT_TRUE(p.client.write_some(parts.data(), parts.size(), at));  // nothing left: no call
}

TEST(Workspace, ADeferredSendLeavesItsRestAndALaterSendGoesBehindIt) {
  // A server with a waiting room defers: the first send writes what the kernel takes and keeps
  // the rest; a second send in the same answer (a line protocol's last line at the half-close)
  // must not write ahead of that rest, and is kept behind it, so the stream stays in order.
  Pair p = make_pair();
  Workspace workspace;
  workspace.defer = true;
  const std::string big = test::pattern(6 << 20);
  workspace.reply.append(big);
  workspace.send(p.client);
  ASSERT_FALSE(workspace.unsent.empty()) << "6 MiB is more than the kernel takes at once";
  const std::size_t kept = workspace.unsent.size();
  const std::uint64_t written = p.client.bytes_written();
  workspace.reply.clear();
  workspace.reply.append(std::string_view(":tail"));
  workspace.send(p.client);
  EXPECT_EQ(p.client.bytes_written(), written) << "nothing written past the rest";
  EXPECT_EQ(workspace.unsent.size(), kept + 5);
  std::thread writer([&] {
    p.client.write_all(workspace.unsent.view());
    p.client.close_write();
  });
  const std::string got = p.server.read_to_end_string();
  writer.join();
  EXPECT_TRUE(got == big + ":tail");
}

TEST(Connection, ReadToEndStopsOneBytePastTheLimit) {
  Pair p = make_pair();
  p.client.write_all(std::string(100, 'x'));
  p.client.close_write();
  Buffer buffer;
  EXPECT_FALSE(p.server.read_to_end(buffer, 10));
  EXPECT_EQ(buffer.size(), 11U);
}

TEST(Connection, ReadToEndAtExactlyTheLimitSucceeds) {
  Pair p = make_pair();
  p.client.write_all(std::string(10, 'x'));
  p.client.close_write();
  Buffer buffer;
  EXPECT_TRUE(p.server.read_to_end(buffer, 10));
  EXPECT_EQ(buffer.size(), 10U);
}

TEST(Connection, ReadToEndStringOverTheLimitIsEmsgsize) {
  Pair p = make_pair();
  p.client.write_all(std::string(100, 'x'));
  p.client.close_write();
  try {
    (void)p.server.read_to_end_string(10);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::message_size);
    EXPECT_NE(std::string(e.what()).find(p.server.peer().to_string()), std::string::npos);
  }
}

TEST(Connection, ReadTimeoutIsEtimedoutNamingThePeer) {
  Pair p = make_pair();
  p.server.set_timeout(50ms);
  EXPECT_EQ(p.server.timeout(), 50ms);
  char byte = 0;
  try {
    (void)p.server.read_some(&byte, 1);
    FAIL() << "read returned without data";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_EQ(std::string(e.what()),
              "read " + p.server.peer().to_string() + ": Connection timed out");
  }
}

TEST(Connection, WriteTimeoutWhenThePeerDoesNotRead) {
  Pair p = make_pair();
  p.server.set_timeout(100ms);
  const std::string chunk(1 << 20, 'x');
  try {
    for (int i = 0; i < 256; ++i) p.server.write_all(chunk);  // far beyond the socket buffers
    FAIL() << "256 MiB fit in the socket buffers";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_EQ(std::string(e.what()).rfind("write ", 0), 0U);
  }
  EXPECT_GT(p.server.bytes_written(), 0U) << "bytes of the partial write are counted";
}

TEST(Connection, WriteToAResetPeerIsAnErrorNotSigpipe) {
  Pair p = make_pair();
  // SO_LINGER 0: close sends RST at once.
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(p.client.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  p.client.close();
  const std::string chunk(1 << 16, 'x');
  try {
    for (int i = 0; i < 64; ++i) p.server.write_all(chunk);
    FAIL() << "writes to a reset peer kept succeeding";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe)
        << e.what();
  }
}

TEST(Connection, ReadFromAResetPeerIsEconnreset) {
  Pair p = make_pair();
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(p.client.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  p.client.write_all("partial");
  p.client.close();
  Buffer buffer;
  try {
    (void)p.server.read_to_end(buffer);
    // The data may be read before the reset is seen; then the end must be an error anyway.
    FAIL() << "a reset connection ended cleanly";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset);
  }
}

TEST(Connection, HalfCloseAfterThePeerResetSaysReset) {
  Pair p = make_pair();
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(p.server.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  p.server.close();
  char byte = 0;
  EXPECT_THROW((void)p.client.read_some(&byte, 1), std::system_error);  // sees the reset
  try {
    p.client.close_write();
    FAIL() << "half-closed a reset connection";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
    EXPECT_EQ(std::string(e.what()),
              "shutdown " + p.client.peer().to_string() + ": Connection reset by peer");
  }
}

TEST(Connection, HalfCloseLetsThePeerSeeEndOfStreamWhileWeStillRead) {
  Pair p = make_pair();
  p.client.close_write();
  char byte = 0;
  EXPECT_EQ(p.server.read_some(&byte, 1), 0U);
  p.server.write_all("still open");
  p.server.close();
  EXPECT_EQ(p.client.read_to_end_string(), "still open");
}

TEST(Connection, WorksOverIPv6) {
  Pair p = make_pair("::1");
  EXPECT_EQ(p.server.peer().family(), AF_INET6);
  p.client.write_all("six");
  p.client.close_write();
  EXPECT_EQ(p.server.read_to_end_string(), "six");
}

TEST(Buffer, GrowsKeepsContentsAndTrims) {
  Buffer buffer;
  EXPECT_EQ(buffer.capacity(), 0U);
  buffer.reserve(4);
  std::memcpy(buffer.tail(), "abcd", 4);
  buffer.commit(4);
  buffer.reserve(1 << 20);
  EXPECT_EQ(buffer.view(), "abcd");
  buffer.consume(1);
  EXPECT_EQ(buffer.view(), "bcd");
  buffer.trim(1 << 21);
  EXPECT_EQ(buffer.view(), "bcd") << "trim below the limit keeps everything";
  buffer.trim(1024);
  EXPECT_EQ(buffer.capacity(), 0U);
  EXPECT_TRUE(buffer.empty());
}

TEST(Buffer, AppendCopiesAfterTheContentsGrowingOnlyWhenTheRoomIsShort) {
  Buffer buffer;
  buffer.append("");
  EXPECT_EQ(buffer.capacity(), 0U) << "nothing to copy: no memory";
  buffer.append("head");
  EXPECT_EQ(buffer.view(), "head");
  EXPECT_EQ(buffer.capacity(), 4U) << "grown to exactly what it needs";
  buffer.reserve(64);
  const char* const memory = buffer.data();
  buffer.append(":tail");
  EXPECT_EQ(buffer.view(), "head:tail");
  EXPECT_EQ(buffer.data(), memory) << "the room sufficed: the same memory";
  EXPECT_EQ(buffer.capacity(), 64U);
}

TEST(Buffer, MoveTransfersTheMemory) {
  Buffer a;
  a.reserve(16);
  std::memcpy(a.tail(), "xy", 2);
  a.commit(2);
  Buffer b(std::move(a));
  EXPECT_EQ(b.view(), "xy");
  EXPECT_EQ(a.capacity(), 0U);  // NOLINT(bugprone-use-after-move)
  a = std::move(b);
  EXPECT_EQ(a.view(), "xy");
}

}  // namespace
}  // namespace sockecho
