// sockecho: IPv4 and IPv6 socket addresses, name resolution, port parsing.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sockecho {

// One socket address of any family (IPv4 or IPv6, chosen at run time), stored by value.
class Address {
 public:
  Address() noexcept;
  // Copies len bytes of a sockaddr; len must not exceed sizeof(sockaddr_storage).
  Address(const sockaddr* addr, socklen_t len);

  // AF_INET, AF_INET6, or AF_UNSPEC for a default-constructed address.
  [[nodiscard]] int family() const noexcept { return storage_.ss_family; }
  // The port in host byte order (0 for AF_UNSPEC).
  [[nodiscard]] std::uint16_t port() const noexcept;
  // The numeric host: "127.0.0.1", "::1", "fe80::1%eth0".
  [[nodiscard]] std::string host() const;
  // "127.0.0.1:12387" or "[::1]:12387": the form every sockecho message uses.
  [[nodiscard]] std::string to_string() const;

  [[nodiscard]] const sockaddr* data() const noexcept;
  [[nodiscard]] sockaddr* data() noexcept;
  [[nodiscard]] socklen_t size() const noexcept { return size_; }
  // For calls that fill the address in (accept, getsockname): the room available, then the size.
  [[nodiscard]] static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }
  void set_size(socklen_t size) noexcept { size_ = size; }

  // The local (getsockname) or remote (getpeername) address of a socket.
  [[nodiscard]] static Address local_of(int fd);
  [[nodiscard]] static Address peer_of(int fd);

  friend bool operator==(const Address& a, const Address& b) noexcept;
  friend bool operator!=(const Address& a, const Address& b) noexcept { return !(a == b); }

 private:
  sockaddr_storage storage_;
  socklen_t size_ = 0;
};

// "host:port", bracketing hosts that contain ':' ("[::1]:80"): names an endpoint in messages
// before it is resolved.
[[nodiscard]] std::string join_host_port(std::string_view host, std::uint16_t port);

// Resolves a host (IPv4 or IPv6 literal, or a name) and port to TCP addresses with
// getaddrinfo(), in the order it prefers. `passive` asks for addresses to bind rather than to
// connect to. Throws std::system_error in resolver_category(), e.g.
// "resolve nosuch.invalid:80: Name or service not known".
[[nodiscard]] std::vector<Address> resolve(std::string_view host, std::uint16_t port,
                                           bool passive = false);

// Parses a decimal TCP port, 0 to 65535 (0: "pick a free one"). Throws std::invalid_argument
// with a message fit for a user on anything else: signs, spaces, hex, empty, too large.
[[nodiscard]] std::uint16_t parse_port(std::string_view text);

}  // namespace sockecho
