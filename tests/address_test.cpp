#include "sockecho/address.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <netinet/in.h>

#include <stdexcept>
#include <string>
#include <system_error>

#include "sockecho/error.hpp"

namespace sockecho {
namespace {

TEST(Address, DefaultIsUnspecified) {
  const Address a;
  EXPECT_EQ(a.family(), AF_UNSPEC);
  EXPECT_EQ(a.port(), 0);
  EXPECT_EQ(a.size(), 0U);
}

TEST(Address, FormatsIPv4AsHostColonPort) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(40312);
  ASSERT_EQ(::inet_pton(AF_INET, "127.0.0.1", &in.sin_addr), 1);
  const Address a(reinterpret_cast<const sockaddr*>(&in), sizeof in);
  EXPECT_EQ(a.family(), AF_INET);
  EXPECT_EQ(a.port(), 40312);
  EXPECT_EQ(a.host(), "127.0.0.1");
  EXPECT_EQ(a.to_string(), "127.0.0.1:40312");
}

TEST(Address, FormatsIPv6InBrackets) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  in6.sin6_addr = in6addr_loopback;
  const Address a(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
  EXPECT_EQ(a.family(), AF_INET6);
  EXPECT_EQ(a.host(), "::1");
  EXPECT_EQ(a.to_string(), "[::1]:80");
}

TEST(Address, RejectsAnOversizedSockaddr) {
  sockaddr_storage big{};
  EXPECT_THROW(Address(reinterpret_cast<const sockaddr*>(&big), sizeof big + 1),
               std::invalid_argument);
}

TEST(Address, EqualityComparesFamilyHostAndPort) {
  const auto a = resolve("127.0.0.1", 1).front();
  const auto b = resolve("127.0.0.1", 1).front();
  const auto c = resolve("127.0.0.1", 2).front();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, Address());
}

TEST(JoinHostPort, BracketsOnlyHostsWithColons) {
  EXPECT_EQ(join_host_port("localhost", 1), "localhost:1");
  EXPECT_EQ(join_host_port("10.0.0.1", 65535), "10.0.0.1:65535");
  EXPECT_EQ(join_host_port("::1", 0), "[::1]:0");
}

TEST(Resolve, IPv4Literal) {
  const auto all = resolve("127.0.0.1", 4242);
  ASSERT_EQ(all.size(), 1U);
  EXPECT_EQ(all[0].to_string(), "127.0.0.1:4242");
}

TEST(Resolve, IPv6Literal) {
  const auto all = resolve("::1", 4242);
  ASSERT_EQ(all.size(), 1U);
  EXPECT_EQ(all[0].family(), AF_INET6);
  EXPECT_EQ(all[0].to_string(), "[::1]:4242");
}

TEST(Resolve, NameGivesLoopbackAddresses) {
  const auto all = resolve("localhost", 7);
  ASSERT_FALSE(all.empty());
  for (const Address& a : all) {
    EXPECT_TRUE(a.host() == "127.0.0.1" || a.host() == "::1") << a.to_string();
    EXPECT_EQ(a.port(), 7);
  }
}

TEST(Resolve, PassiveWildcards) {
  EXPECT_EQ(resolve("0.0.0.0", 1, true).front().to_string(), "0.0.0.0:1");
  EXPECT_EQ(resolve("::", 1, true).front().to_string(), "[::]:1");
}

TEST(Resolve, UnknownNameNamesTheHostInTheError) {
  try {
    (void)resolve("no-such-host.invalid", 80);
    FAIL() << "resolved a .invalid name";
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("resolve no-such-host.invalid:80: ", 0), 0U) << what;
    EXPECT_NE(e.code().value(), 0);
  }
}

TEST(Resolve, MalformedLiteralIsAnError) {
  EXPECT_THROW((void)resolve("127.0.0.1.2.3", 80), std::system_error);
  EXPECT_THROW((void)resolve("[::1]", 80), std::system_error);
}

TEST(ResolverCategory, UsesGaiStrerror) {
  EXPECT_STREQ(resolver_category().name(), "getaddrinfo");
  EXPECT_EQ(resolver_category().message(EAI_NONAME), ::gai_strerror(EAI_NONAME));
}

TEST(ParsePort, AcceptsTheWholeRange) {
  EXPECT_EQ(parse_port("0"), 0);
  EXPECT_EQ(parse_port("1"), 1);
  EXPECT_EQ(parse_port("40312"), 40312);
  EXPECT_EQ(parse_port("65535"), 65535);
  EXPECT_EQ(parse_port("00080"), 80);
}

TEST(ParsePort, RejectsEverythingElse) {
  for (const char* bad : {"", "-1", "+1", "65536", "99999999999999999999", "abc", "1.5", " 80",
                          "80 ", "0x50", "8o"}) {
    EXPECT_THROW((void)parse_port(bad), std::invalid_argument) << "'" << bad << "'";
  }
}

TEST(ParsePort, MessageQuotesTheValue) {
  try {
    (void)parse_port("70000");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'70000'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sockecho
