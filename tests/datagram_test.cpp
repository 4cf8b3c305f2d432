#include "sockecho/datagram.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::kPatience;

Clock::time_point patience() { return Clock::now() + kPatience; }

// The next datagram on `socket`, whole, within kPatience.
std::string next(DatagramSocket& socket, Address* from = nullptr) {
  std::string data(kDatagramBufferSize, '\0');
  const std::optional<Received> got = socket.receive(data.data(), data.size(), patience());
  if (!got) throw std::runtime_error("interrupted");
  EXPECT_FALSE(got->truncated);
  if (from != nullptr) *from = got->peer;
  data.resize(got->size);
  return data;
}

TEST(DatagramSocket, PortZeroPicksAFreePortAndNamesItUdp) {
  const DatagramSocket socket = DatagramSocket::bind("127.0.0.1", 0);
  EXPECT_NE(socket.address().port(), 0);
  EXPECT_EQ(socket.address(), Address::local_of(socket.fd()));
  EXPECT_EQ(socket.name(), "udp:127.0.0.1:" + std::to_string(socket.address().port()));
  EXPECT_TRUE(test::close_on_exec(socket.fd()));
  int type = 0;
  socklen_t len = sizeof type;
  ASSERT_EQ(::getsockopt(socket.fd(), SOL_SOCKET, SO_TYPE, &type, &len), 0);
  EXPECT_EQ(type, SOCK_DGRAM);
}

TEST(DatagramSocket, IPv6NameIsBracketed) {
  const DatagramSocket socket = DatagramSocket::bind("::1", 0);
  EXPECT_EQ(socket.address().family(), AF_INET6);
  EXPECT_EQ(socket.name(), "udp:[::1]:" + std::to_string(socket.address().port()));
}

TEST(DatagramSocket, BindFailureNamesTheAddress) {
  // 192.0.2.1 (TEST-NET-1) is an address this host does not have.
  try {
    (void)DatagramSocket::bind("192.0.2.1", 0);
    ADD_FAILURE() << "bound an address this host does not have";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_not_available) << e.what();
    EXPECT_NE(std::string(e.what()).find("bind udp:192.0.2.1:"), std::string::npos) << e.what();
  }
}

TEST(DatagramSocket, ReceiveReportsTheRealLengthOfATruncatedDatagram) {
  DatagramSocket server = DatagramSocket::bind("127.0.0.1", 0);
  DatagramSocket client = DatagramSocket::connect("127.0.0.1", server.address().port());
  ASSERT_TRUE(client.send(std::string(100, 'x')));
  std::string room(10, '\0');
  const std::optional<Received> got = server.receive(room.data(), room.size(), patience());
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->truncated);
  EXPECT_EQ(got->size, 100U);
  EXPECT_EQ(got->peer, client.address());
}

TEST(DatagramSocket, ProtocolMaximumsGoWholeAndOneMoreIsRefused) {
  for (const char* host : {"127.0.0.1", "::1"}) {
    SCOPED_TRACE(host);
    DatagramSocket server = DatagramSocket::bind(host, 0);
    DatagramSocket client = DatagramSocket::connect(host, server.address().port());
    const std::size_t most = max_datagram(server.address());
    EXPECT_EQ(most, std::string(host) == "::1" ? kMaxDatagramIpv6 : kMaxDatagramIpv4);
    const std::string big = test::pattern(most);
    ASSERT_TRUE(client.send(big));
    Address from;
    EXPECT_EQ(next(server, &from), big);
    // Pieces are gathered into one datagram.
    const std::array<std::string_view, 2> halves = {std::string_view(big).substr(0, 7),
                                                    std::string_view(big).substr(7)};
    ASSERT_TRUE(server.send_to(from, halves.data(), halves.size()));
    EXPECT_EQ(next(client), big);
    try {
      (void)client.send(big + "x");
      ADD_FAILURE() << "sent a datagram over the protocol maximum";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::message_size) << e.what();
    }
  }
}

TEST(DatagramSocket, ReceiveTimesOut) {
  DatagramSocket socket = DatagramSocket::bind("127.0.0.1", 0);
  char byte = 0;
  const auto start = Clock::now();
  try {
    (void)socket.receive(&byte, 1, Clock::now() + 50ms);
    ADD_FAILURE() << "received from nobody";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
  }
  EXPECT_GE(Clock::now() - start, 50ms);
}

TEST(DatagramSocket, InterruptWakesABlockedReceive) {
  DatagramSocket socket = DatagramSocket::bind("127.0.0.1", 0);
  std::promise<bool> woke;
  std::thread receiver([&] {
    char byte = 0;
    woke.set_value(!socket.receive(&byte, 1).has_value());
  });
  socket.interrupt();
  auto result = woke.get_future();
  ASSERT_EQ(result.wait_for(kPatience), std::future_status::ready);
  EXPECT_TRUE(result.get());
  receiver.join();
  char byte = 0;
  EXPECT_FALSE(socket.receive(&byte, 1).has_value());  // and every later one
}

TEST(DatagramSocket, ConnectedSocketHearsThatNothingListens) {
  std::uint16_t port = 0;
  {
    const DatagramSocket gone = DatagramSocket::bind("127.0.0.1", 0);
    port = gone.address().port();
  }
  try {
    (void)datagram_request("127.0.0.1", port, "hello", kPatience);
    ADD_FAILURE() << "a reply from a closed port";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_refused) << e.what();
    EXPECT_NE(std::string(e.what()).find("udp:127.0.0.1:"), std::string::npos) << e.what();
  }
}

TEST(DatagramSocket, RequestTimesOutWhenNobodyAnswers) {
  const DatagramSocket silent = DatagramSocket::bind("127.0.0.1", 0);
  const auto start = Clock::now();
  try {
    (void)datagram_request("127.0.0.1", silent.address().port(), "hello", 100ms);
    ADD_FAILURE() << "a reply from a silent socket";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
  }
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, kPatience);
}

TEST(DatagramSocket, ConnectFromAChosenSource) {
  DatagramSocket server = DatagramSocket::bind("127.0.0.1", 0);
  const std::vector<Address> source = resolve("127.0.0.2", 0);
  DatagramSocket client = DatagramSocket::connect("127.0.0.1", server.address().port(), source[0]);
  EXPECT_EQ(client.address().host(), "127.0.0.2");
  ASSERT_TRUE(client.send("x"));
  Address from;
  EXPECT_EQ(next(server, &from), "x");
  EXPECT_EQ(from.host(), "127.0.0.2");
}

}  // namespace
}  // namespace sockecho
