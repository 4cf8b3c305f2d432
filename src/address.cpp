#include "sockecho/address.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "sockecho/error.hpp"

namespace sockecho {

Address::Address() noexcept : storage_{} { storage_.ss_family = AF_UNSPEC; }

Address::Address(const sockaddr* addr, socklen_t len) : storage_{}, size_(len) {
  if (len > capacity()) throw std::invalid_argument("socket address too long");
  std::memcpy(&storage_, addr, len);
}

Address Address::unix_path(std::string_view path) {
  if (path.empty()) throw std::invalid_argument("Unix socket path is empty");
  if (path.find('\0') != std::string_view::npos) {
    throw std::invalid_argument("Unix socket path contains a NUL byte");
  }
  const bool abstract = path.front() == '@';
  const std::string_view name = abstract ? path.substr(1) : path;
  if (name.empty()) throw std::invalid_argument("abstract Unix socket name '@' is empty");
  if (name.size() > kMaxUnixPath) {
    throw std::invalid_argument("Unix socket path '" + std::string(path) + "' is " +
                                std::to_string(name.size()) + " bytes long; at most " +
                                std::to_string(kMaxUnixPath) + " fit in sockaddr_un");
  }
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  // An abstract name starts with a NUL and is exactly as long as the address says, with no
  // terminator; a path ends at its NUL, which the zeroed sun_path supplies.
  const std::size_t start = abstract ? 1 : 0;
  std::memcpy(un.sun_path + start, name.data(), name.size());
  const std::size_t used = start + name.size() + (abstract ? 0 : 1);
  return {reinterpret_cast<const sockaddr*>(&un),
          static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + used)};
}

std::string Address::path() const {
  if (family() != AF_UNIX) return {};
  const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
  const std::size_t head = offsetof(sockaddr_un, sun_path);
  if (size_ <= head) return {};  // unnamed
  // A kernel's address fits sun_path; one built from arbitrary bytes is cut to it.
  const std::size_t length = std::min<std::size_t>(size_ - head, sizeof un->sun_path);
  if (un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, length - 1);
  return {un->sun_path, ::strnlen(un->sun_path, length)};
}

Address Address::unmapped() const {
  if (family() != AF_INET6) return *this;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
  if (!IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return *this;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = in6->sin6_port;
  std::memcpy(&in.sin_addr, reinterpret_cast<const char*>(&in6->sin6_addr) + 12,
              sizeof in.sin_addr);
  return {reinterpret_cast<const sockaddr*>(&in), sizeof in};
}

bool Address::is_loopback() const noexcept {
  if (family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (family() != AF_INET6) return false;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
    return reinterpret_cast<const unsigned char*>(&in6->sin6_addr)[12] == 127;
  }
  return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

std::string Address::source_key() const {
  if (family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
    return {reinterpret_cast<const char*>(&in->sin_addr), sizeof in->sin_addr};
  }
  if (family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return unmapped().source_key();
    return {reinterpret_cast<const char*>(&in6->sin6_addr), sizeof in6->sin6_addr};
  }
  if (family() == AF_UNIX) {
    // Of lengths no IP key has (4 and 16 bytes), so the families never meet: 'u' and the uid
    // (5 bytes), or 'p', the path and a NUL (at least 17).
    if (credentials_) {
      std::string key(1 + sizeof(uid_t), 'u');
      std::memcpy(&key[1], &credentials_->uid, sizeof(uid_t));
      return key;
    }
    std::string key = "p" + path();
    key.resize(std::max<std::size_t>(key.size() + 1, 17), '\0');
    return key;
  }
  return {};
}

const sockaddr* Address::data() const noexcept {
  return reinterpret_cast<const sockaddr*>(&storage_);
}

sockaddr* Address::data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }

std::uint16_t Address::port() const noexcept {
  switch (family()) {
    case AF_INET:
      return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    case AF_INET6:
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    default:  // AF_UNIX has no ports
      return 0;
  }
}

std::string Address::host() const {
  std::array<char, NI_MAXHOST> text{};
  if (family() == AF_INET) {
    // inet_ntop is much cheaper than getnameinfo, and IPv4 has no scope to print.
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
    if (::inet_ntop(AF_INET, &in->sin_addr, text.data(), text.size()) != nullptr) {
      return text.data();
    }
  } else if (family() == AF_INET6) {
    if (::getnameinfo(data(), size_, text.data(), static_cast<socklen_t>(text.size()), nullptr, 0,
                      NI_NUMERICHOST) == 0) {
      return text.data();
    }
  } else if (family() == AF_UNIX) {
    return path();
  }
  return "?";
}

std::string Address::to_string() const {
  if (family() == AF_UNSPEC) return "(none)";
  if (family() == AF_UNIX) {
    if (credentials_) {
      return "unix:uid=" + std::to_string(credentials_->uid) +
             ",pid=" + std::to_string(credentials_->pid);
    }
    const std::string name = path();
    return "unix:" + (name.empty() ? std::string("(unnamed)") : name);
  }
  return join_host_port(host(), port());
}

namespace {

// The address getsockname() or getpeername() reports for fd.
Address named_by(int fd, int (*call)(int, sockaddr*, socklen_t*), const char* name) {
  Address address;
  socklen_t len = Address::capacity();
  if (call(fd, address.data(), &len) != 0) throw os_error(errno, name);
  address.set_size(len);
  return address;
}

}  // namespace

Address Address::local_of(int fd) { return named_by(fd, ::getsockname, "getsockname"); }

Address Address::peer_of(int fd) { return named_by(fd, ::getpeername, "getpeername"); }

bool operator==(const Address& a, const Address& b) noexcept {
  return a.size_ == b.size_ && std::memcmp(&a.storage_, &b.storage_, a.size_) == 0 &&
         a.credentials_ == b.credentials_;
}

std::string join_host_port(std::string_view host, std::uint16_t port) {
  std::string out;
  const bool bracket = host.find(':') != std::string_view::npos;
  if (bracket) out += '[';
  out += host;
  if (bracket) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

std::vector<Address> resolve(std::string_view host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  const std::string node(host);
  const std::string service = std::to_string(port);
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(node.c_str(), service.c_str(), &hints, &list);
  if (rc != 0) {
    const int err = rc == EAI_SYSTEM ? errno : 0;
    const std::string what = "resolve " + join_host_port(host, port);
    if (err != 0) throw os_error(err, what);
    throw std::system_error(rc, resolver_category(), what);
  }
  std::vector<Address> out;
  for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    Address address(ai->ai_addr, ai->ai_addrlen);
    bool seen = false;
    for (const auto& a : out) seen = seen || a == address;
    if (!seen) out.push_back(address);
  }
  ::freeaddrinfo(list);
  if (out.empty()) {
    throw std::system_error(EAI_NONAME, resolver_category(),
                            "resolve " + join_host_port(host, port));
  }
  return out;
}

std::uint16_t parse_port(std::string_view text) {
  constexpr unsigned kMaxPort = 65535;
  if (text.empty()) throw std::invalid_argument("port is empty");
  unsigned value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') {
      throw std::invalid_argument("port '" + std::string(text) +
                                  "' is not a number from 0 to 65535");
    }
    value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > kMaxPort) {
      throw std::invalid_argument("port '" + std::string(text) + "' is out of range (0 to 65535)");
    }
  }
  return static_cast<std::uint16_t>(value);
}

}  // namespace sockecho
