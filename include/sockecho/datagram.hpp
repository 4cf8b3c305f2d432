// sockecho: a UDP socket: bound for a server, or connected to one server for a client.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "sockecho/address.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/export.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

namespace detail {
class Wake;  // the eventfd that interrupt() signals (src/wake.hpp)
}  // namespace detail

// The largest UDP payload: 65,535 (the IP length field) less the 20-byte IPv4 and 8-byte UDP
// headers; IPv6's length field does not count its own 40-byte header, so only UDP's 8 go.
inline constexpr std::size_t kMaxDatagramIpv4 = 65507;
inline constexpr std::size_t kMaxDatagramIpv6 = 65527;
// Room that holds any datagram either family carries, so that only a larger one (an IPv6
// jumbogram) is ever truncated.
inline constexpr std::size_t kDatagramBufferSize = 65536;

// The largest payload of a datagram to or from `peer`: kMaxDatagramIpv6 for an IPv6 address,
// kMaxDatagramIpv4 for an IPv4 one and for an IPv4-mapped IPv6 one (its datagrams cross IPv4).
[[nodiscard]] SOCKECHO_EXPORT std::size_t max_datagram(const Address& peer) noexcept;

// One datagram as receive() found it.
struct SOCKECHO_EXPORT Received {
  std::size_t size = 0;    // its real length, MSG_TRUNC's answer, even when larger than the room
  bool truncated = false;  // larger than the room given: only the first bytes were kept
  Address peer;            // who sent it
};

// A UDP socket, close-on-exec. receive() and send_to() may be called from several threads at
// once; interrupt(), from any thread, makes every blocked and later receive() return
// std::nullopt (it shuts the socket down, and signals an eventfd for the waits with a time
// limit, which poll() both).
class SOCKECHO_EXPORT DatagramSocket {
 public:
  // Resolves host, then binds the first address that works (SO_REUSEADDR on). Port 0 picks a
  // free port: read it back with address(). Throws std::system_error, e.g.
  // "bind udp:127.0.0.1:12387: Address already in use".
  [[nodiscard]] static DatagramSocket bind(std::string_view host, std::uint16_t port);
  // A socket bound to one given address (port 0: any), for a client that must send from a
  // chosen source.
  [[nodiscard]] static DatagramSocket bind(const Address& address);
  // A client's socket, connected to the first address host:port resolves to for which a socket
  // can be made: it sends there and receives only from there, and an ICMP "port unreachable"
  // comes back as ECONNREFUSED on the next receive(). `source`, if set, is bound first.
  [[nodiscard]] static DatagramSocket connect(std::string_view host, std::uint16_t port,
                                              const std::optional<Address>& source = std::nullopt);

  DatagramSocket(DatagramSocket&& other) noexcept;
  DatagramSocket& operator=(DatagramSocket&& other) noexcept;
  DatagramSocket(const DatagramSocket&) = delete;
  DatagramSocket& operator=(const DatagramSocket&) = delete;
  ~DatagramSocket();

  // The bound address, with the real port.
  [[nodiscard]] const Address& address() const noexcept { return address_; }
  // The server a connect()ed socket talks to; AF_UNSPEC for a bound one.
  [[nodiscard]] const Address& peer() const noexcept { return peer_; }
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }
  // "udp:127.0.0.1:12387", "udp:[::1]:12387": the bound address as sockecho names it.
  [[nodiscard]] std::string name() const { return "udp:" + address_.to_string(); }

  // Waits for the next datagram and copies at most `capacity` bytes of it into `data` (recvmsg
  // with MSG_TRUNC: a longer one is reported with its real size and `truncated`, never passed
  // off as whole). Returns std::nullopt once interrupt() has been called. Throws
  // std::system_error: ETIMEDOUT when `until` passes first, or the socket's error (ECONNREFUSED
  // on a connected socket whose server is not there).
  [[nodiscard]] std::optional<Received> receive(char* data, std::size_t capacity,
                                                Clock::time_point until = Clock::time_point::max());

  // Sends one datagram made of `pieces` in order (gathered into one sendmsg, MSG_NOSIGNAL) to
  // `to`, or to the connected peer when `to` is AF_UNSPEC. Waits while the send buffer is full;
  // returns false, unsent, if interrupt() came first. Throws std::system_error on failure
  // (EMSGSIZE for a datagram larger than the protocol allows).
  bool send_to(const Address& to, const std::string_view* pieces, std::size_t count);
  bool send_to(const Address& to, std::string_view bytes) { return send_to(to, &bytes, 1); }
  // Sends to the connected peer.
  bool send(std::string_view bytes) { return send_to(Address(), &bytes, 1); }

  // Wakes every receive() and send_to() blocked on this socket; later ones return at once. Safe
  // from any thread; the socket stays open until it is destroyed.
  void interrupt() noexcept;
  [[nodiscard]] bool interrupted() const noexcept {
    return interrupted_->load(std::memory_order_acquire);
  }

 private:
  DatagramSocket(Fd socket, std::unique_ptr<detail::Wake> wake, const Address& address,
                 const Address& peer) noexcept;
  // Waits for `events` on the socket, or the wake-up: false when interrupted, and ETIMEDOUT
  // thrown when `until` passes. Only for waits with a time limit; others block in the call.
  bool wait(short events, Clock::time_point until, const char* call, const Address& whom);

  Fd socket_;
  std::unique_ptr<detail::Wake> wake_;  // readable once interrupt() has been called
  Address address_;
  Address peer_;
  // Behind a pointer so that the socket can move (an atomic cannot).
  std::unique_ptr<std::atomic<bool>> interrupted_ = std::make_unique<std::atomic<bool>>(false);
};

// Everything readable from `fd` (a file, a pipe, stdin) until its end, as one datagram's message.
// Throws std::system_error naming `what`: EMSGSIZE once it passes `most` bytes, or the read's.
[[nodiscard]] SOCKECHO_EXPORT std::string read_message(int fd, std::string_view what,
                                                       std::size_t most = kMaxDatagramIpv6);

// One exchange of the echo protocol over UDP, client side: sends `message` as one datagram
// from `socket` (connected) and returns the one reply. A zero timeout waits forever. Throws
// std::system_error: ETIMEDOUT when no reply came in time, ECONNREFUSED when the host said
// nothing listens there, EMSGSIZE for a message larger than one datagram.
[[nodiscard]] SOCKECHO_EXPORT std::string datagram_request(DatagramSocket& socket,
                                                           std::string_view message,
                                                           std::chrono::milliseconds timeout);
// The same with a socket of its own, connected to host:port.
[[nodiscard]] SOCKECHO_EXPORT std::string datagram_request(std::string_view host,
                                                           std::uint16_t port,
                                                           std::string_view message,
                                                           std::chrono::milliseconds timeout);

}  // namespace sockecho
