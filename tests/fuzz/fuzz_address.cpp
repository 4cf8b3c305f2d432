// Fuzz target: address and port handling (include/sockecho/address.hpp) on arbitrary bytes:
// parse_port against a reference, join_host_port's bracketing and round trip, and Address built
// from arbitrary sockaddr bytes, printed and compared. Nothing here resolves names (no DNS).
//
// Input: byte 0 picks the function (modulo 4: port, join, Address, Address::unix_path); the rest is
// its text, or for Address a length byte and the socket address bytes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "fuzz.hpp"
#include "sockecho/address.hpp"

namespace {

void port(std::string_view text) {
  bool valid = !text.empty();
  unsigned long value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9' || value > 65535) {
      valid = false;
      break;
    }
    value = value * 10 + static_cast<unsigned long>(c - '0');
  }
  valid = valid && value <= 65535;
  try {
    const std::uint16_t got = sockecho::parse_port(text);
    SOCKECHO_FUZZ_CHECK(valid && got == value);
  } catch (const std::invalid_argument& e) {
    SOCKECHO_FUZZ_CHECK(!valid);
    SOCKECHO_FUZZ_CHECK(std::string_view(e.what()).find("port") != std::string_view::npos);
  }
}

void join(sockecho::fuzz::Input& input) {
  const auto number = static_cast<std::uint16_t>(input.number(2));
  const std::string_view host = input.rest();
  const std::string joined = sockecho::join_host_port(host, number);
  const bool bracketed = host.find(':') != std::string_view::npos;
  // [host]:port when the host has a ':', else host:port; the port reads back from after the
  // last ':' whatever the host holds.
  const std::string expected_host = bracketed ? "[" + std::string(host) + "]" : std::string(host);
  SOCKECHO_FUZZ_CHECK(joined.compare(0, expected_host.size(), expected_host) == 0);
  const std::size_t colon = joined.rfind(':');
  SOCKECHO_FUZZ_CHECK(colon == expected_host.size());
  SOCKECHO_FUZZ_CHECK(sockecho::parse_port(std::string_view(joined).substr(colon + 1)) == number);
}

void address(sockecho::fuzz::Input& input) {
  const std::size_t len = input.byte();  // up to 255: also longer than sockaddr_storage (128)
  const std::string_view bytes = input.rest();
  sockaddr_storage raw{};
  std::memcpy(&raw, bytes.data(), std::min(bytes.size(), sizeof raw));
  if (len > sizeof raw) {
    bool refused = false;
    try {
      const sockecho::Address too_long(reinterpret_cast<const sockaddr*>(&raw),
                                       static_cast<socklen_t>(len));
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    SOCKECHO_FUZZ_CHECK(refused);  // longer than sockaddr_storage: never copied
    return;
  }
  const sockecho::Address a(reinterpret_cast<const sockaddr*>(&raw), static_cast<socklen_t>(len));
  SOCKECHO_FUZZ_CHECK(a.size() == len);
  const std::string host = a.host();
  const std::string text = a.to_string();
  const sockecho::Address copy = a;
  SOCKECHO_FUZZ_CHECK(copy == a && !(copy != a));
  SOCKECHO_FUZZ_CHECK(copy.to_string() == text);

  if (a.family() == AF_INET && len >= sizeof(sockaddr_in)) {
    // The printed host reads back as the same four bytes, and the port is the stored one.
    const auto* in = reinterpret_cast<const sockaddr_in*>(&raw);
    in_addr back{};
    SOCKECHO_FUZZ_CHECK(::inet_pton(AF_INET, host.c_str(), &back) == 1);
    SOCKECHO_FUZZ_CHECK(std::memcmp(&back, &in->sin_addr, sizeof back) == 0);
    SOCKECHO_FUZZ_CHECK(a.port() == ntohs(in->sin_port));
    SOCKECHO_FUZZ_CHECK(text == host + ":" + std::to_string(a.port()));
  } else if (a.family() == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&raw);
    SOCKECHO_FUZZ_CHECK(a.port() == ntohs(in6->sin6_port));
    SOCKECHO_FUZZ_CHECK(text == "[" + host + "]:" + std::to_string(a.port()));
    // getnameinfo may append a zone ("%eth0" or "%7"); the address before it reads back as the
    // same sixteen bytes.
    const std::string bare = host.substr(0, host.find('%'));
    in6_addr back{};
    SOCKECHO_FUZZ_CHECK(::inet_pton(AF_INET6, bare.c_str(), &back) == 1);
    SOCKECHO_FUZZ_CHECK(std::memcmp(&back, &in6->sin6_addr, sizeof back) == 0);
  } else if (a.family() == AF_UNIX) {
    // Whatever the bytes, a path of at most sun_path's room, and no port.
    SOCKECHO_FUZZ_CHECK(a.port() == 0 && a.path().size() <= 108 + 1);
    SOCKECHO_FUZZ_CHECK(text.rfind("unix:", 0) == 0);
    SOCKECHO_FUZZ_CHECK(a.source_key().size() != 4 && a.source_key().size() != 16);
  } else if (a.family() == AF_UNSPEC) {
    SOCKECHO_FUZZ_CHECK(a.port() == 0);
    SOCKECHO_FUZZ_CHECK(text == "(none)");
  } else {
    // Another family, or too short for its own: no port, and a host of "?" unless the system
    // could still print it.
    SOCKECHO_FUZZ_CHECK(!text.empty());
  }
}

// Address::unix_path() on arbitrary text: a path it takes reads back exactly; one it refuses
// says why.
void unix_path(std::string_view text) {
  try {
    const sockecho::Address a = sockecho::Address::unix_path(text);
    SOCKECHO_FUZZ_CHECK(a.family() == AF_UNIX && a.path() == text);
    SOCKECHO_FUZZ_CHECK(a.to_string() == "unix:" + std::string(text));
    SOCKECHO_FUZZ_CHECK(text.size() <= sockecho::Address::kMaxUnixPath + 1);
  } catch (const std::invalid_argument& e) {
    SOCKECHO_FUZZ_CHECK(std::string_view(e.what()).size() > 0);
    SOCKECHO_FUZZ_CHECK(text.empty() || text == "@" || text.find('\0') != std::string_view::npos ||
                        text.size() > sockecho::Address::kMaxUnixPath);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sockecho::fuzz::Input input(data, size);
  switch (input.byte() % 4) {
    case 0:
      port(input.rest());
      break;
    case 1:
      join(input);
      break;
    case 2:
      address(input);
      break;
    default:
      unix_path(input.rest());
      break;
  }
  return 0;
}
