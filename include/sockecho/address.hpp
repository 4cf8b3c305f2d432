// sockecho: IPv4, IPv6 and Unix-domain socket addresses, name resolution, port parsing.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/export.hpp"

namespace sockecho {

namespace detail {
struct AddressAccess;  // what only the library sets on an Address (src/address_access.hpp)
}  // namespace detail

// Who is at the other end of a Unix-domain connection, as the kernel recorded it when the
// connection was made (SO_PEERCRED): the peer process's pid and its effective uid and gid.
struct SOCKECHO_EXPORT Credentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  friend bool operator==(const Credentials& a, const Credentials& b) noexcept {
    return a.pid == b.pid && a.uid == b.uid && a.gid == b.gid;
  }
};

// One socket address of any family (IPv4, IPv6 or Unix-domain, chosen at run time), stored by
// value.
//
// A Unix-domain address is a path ("/run/sockecho/sockecho.sock") or, on Linux, a name in the
// abstract namespace, written with a leading '@' ("@sockecho"): such a name has no file, so no
// permissions guard it and nothing is left to remove; any process in the same network namespace
// can connect. The peer of an accepted Unix-domain connection has no path of its own (clients
// rarely bind one); what identifies it is its Credentials, which Listener records on the peer
// address, so messages and the per-source count name the peer by user id.
class SOCKECHO_EXPORT Address {
 public:
  // The longest path (or abstract name, '@' not counted) a Unix-domain address can hold: the
  // room in sockaddr_un's sun_path, less its terminating NUL.
  static constexpr std::size_t kMaxUnixPath = 107;

  Address() noexcept;
  // Copies len bytes of a sockaddr; len must not exceed sizeof(sockaddr_storage).
  Address(const sockaddr* addr, socklen_t len);

  // A Unix-domain address: a path, or "@name" for an abstract one. Throws std::invalid_argument
  // for an empty path, one with a NUL byte, or one longer than kMaxUnixPath bytes.
  [[nodiscard]] static Address unix_path(std::string_view path);

  // AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC for a default-constructed address.
  [[nodiscard]] int family() const noexcept { return storage_.ss_family; }
  // The port in host byte order (0 for AF_UNIX and AF_UNSPEC).
  [[nodiscard]] std::uint16_t port() const noexcept;
  // The numeric host: "127.0.0.1", "::1", "fe80::1%eth0"; a Unix-domain address's path().
  [[nodiscard]] std::string host() const;
  // A Unix-domain address's path, "@name" for an abstract one, empty for an unnamed socket (and
  // for the other families).
  [[nodiscard]] std::string path() const;
  // "127.0.0.1:12387", "[::1]:12387", "unix:/run/x.sock": the form every sockecho message uses.
  // A Unix-domain peer with credentials is "unix:uid=33,pid=4711".
  [[nodiscard]] std::string to_string() const;

  // The credentials of a Unix-domain peer, as the kernel reported them to the Listener that
  // accepted the connection; none on any other address. No caller can set them, so a per-source
  // key made from them cannot be forged.
  [[nodiscard]] const std::optional<Credentials>& credentials() const noexcept {
    return credentials_;
  }

  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries, with its port;
  // any other address as it is. Where sockecho compares or names a peer, it uses this.
  [[nodiscard]] Address unmapped() const;
  // 127.0.0.0/8, ::1 or ::ffff:127.x.y.z: an address only this host can send from.
  [[nodiscard]] bool is_loopback() const noexcept;

  // The bytes that identify a client for per-source counting: the IP address alone (no port),
  // an IPv4-mapped IPv6 address as its IPv4 address; a Unix-domain peer's user id (its path when
  // no credentials were recorded). Addresses of different families never share a key.
  [[nodiscard]] std::string source_key() const;

  [[nodiscard]] const sockaddr* data() const noexcept;
  [[nodiscard]] sockaddr* data() noexcept;
  [[nodiscard]] socklen_t size() const noexcept { return size_; }
  // For calls that fill the address in (accept, getsockname): the room available, then the size.
  [[nodiscard]] static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }
  void set_size(socklen_t size) noexcept { size_ = size; }

  // The local (getsockname) or remote (getpeername) address of a socket.
  [[nodiscard]] static Address local_of(int fd);
  [[nodiscard]] static Address peer_of(int fd);

  friend SOCKECHO_EXPORT bool operator==(const Address& a, const Address& b) noexcept;
  friend bool operator!=(const Address& a, const Address& b) noexcept { return !(a == b); }

 private:
  friend struct detail::AddressAccess;
  sockaddr_storage storage_;
  socklen_t size_ = 0;
  std::optional<Credentials> credentials_;
};

// "host:port", bracketing hosts that contain ':' ("[::1]:80"): names an endpoint in messages
// before it is resolved.
[[nodiscard]] SOCKECHO_EXPORT std::string join_host_port(std::string_view host, std::uint16_t port);

// Resolves a host (IPv4 or IPv6 literal, or a name) and port to TCP addresses with
// getaddrinfo(), in the order it prefers. `passive` asks for addresses to bind rather than to
// connect to. Throws std::system_error in resolver_category(), e.g.
// "resolve nosuch.invalid:80: Name or service not known".
[[nodiscard]] SOCKECHO_EXPORT std::vector<Address> resolve(std::string_view host,
                                                           std::uint16_t port,
                                                           bool passive = false);

// Parses a decimal TCP port, 0 to 65535 (0: "pick a free one"). Throws std::invalid_argument
// with a message fit for a user on anything else: signs, spaces, hex, empty, too large.
[[nodiscard]] SOCKECHO_EXPORT std::uint16_t parse_port(std::string_view text);

}  // namespace sockecho
