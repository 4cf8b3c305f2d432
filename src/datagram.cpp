#include "sockecho/datagram.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "first_that_works.hpp"
#include "sockecho/error.hpp"
#include "wake.hpp"

namespace sockecho {

namespace {

// How many pieces one sendmsg gathers; a reply of more is refused (EMSGSIZE) rather than
// split, since a datagram must go in one call.
constexpr std::size_t kMaxPieces = 64;

std::string udp_name(const Address& address) { return "udp:" + address.to_string(); }

// Blocking: a server's receive() is then one recvmsg() per datagram, with no poll() before it.
// Waits with a time limit poll() first and then take what is there with MSG_DONTWAIT.
Fd udp_socket(const Address& address) {
  Fd socket(::socket(address.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket) throw os_error(errno, "socket " + udp_name(address));
  return socket;
}

std::unique_ptr<detail::Wake> wake_for(const Address& address) {
  return std::make_unique<detail::Wake>(udp_name(address));
}

Fd bound_socket(const Address& address) {
  Fd socket = udp_socket(address);
  const int on = 1;
  if (::setsockopt(socket.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) {
    throw os_error(errno, "setsockopt SO_REUSEADDR " + udp_name(address));
  }
  if (::bind(socket.get(), address.data(), address.size()) != 0) {
    throw os_error(errno, "bind " + udp_name(address));
  }
  return socket;
}

}  // namespace

std::size_t max_datagram(const Address& peer) noexcept {
  if (peer.family() != AF_INET6) return kMaxDatagramIpv4;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer.data());
  return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) ? kMaxDatagramIpv4 : kMaxDatagramIpv6;
}

DatagramSocket::DatagramSocket(Fd socket, std::unique_ptr<detail::Wake> wake,
                               const Address& address, const Address& peer) noexcept
    : socket_(std::move(socket)), wake_(std::move(wake)), address_(address), peer_(peer) {}

DatagramSocket::DatagramSocket(DatagramSocket&& other) noexcept
    : socket_(std::move(other.socket_)),
      wake_(std::move(other.wake_)),
      address_(other.address_),
      peer_(other.peer_),
      interrupted_(std::move(other.interrupted_)) {}

DatagramSocket::~DatagramSocket() = default;

DatagramSocket& DatagramSocket::operator=(DatagramSocket&& other) noexcept {
  if (this == &other) return *this;
  socket_ = std::move(other.socket_);
  wake_ = std::move(other.wake_);
  address_ = other.address_;
  peer_ = other.peer_;
  interrupted_ = std::move(other.interrupted_);
  return *this;
}

DatagramSocket DatagramSocket::bind(std::string_view host, std::uint16_t port) {
  return detail::first_that_works(
      resolve(host, port, /*passive=*/true),
      [](const Address& candidate) { return DatagramSocket::bind(candidate); });
}

DatagramSocket DatagramSocket::bind(const Address& address) {
  Fd socket = bound_socket(address);
  std::unique_ptr<detail::Wake> wake = wake_for(address);
  const Address bound = Address::local_of(socket.get());
  return {std::move(socket), std::move(wake), bound, Address()};
}

DatagramSocket DatagramSocket::connect(std::string_view host, std::uint16_t port,
                                       const std::optional<Address>& source) {
  std::vector<Address> candidates = resolve(host, port);
  if (source) {
    candidates.erase(
        std::remove_if(candidates.begin(), candidates.end(),
                       [&](const Address& a) { return a.family() != source->family(); }),
        candidates.end());
    if (candidates.empty()) {
      throw os_error(EAFNOSUPPORT, "connect " + join_host_port(host, port) +
                                       " (no address of the source's family)");
    }
  }
  return detail::first_that_works(candidates, [&](const Address& candidate) {
    Fd socket = source ? bound_socket(*source) : udp_socket(candidate);
    if (::connect(socket.get(), candidate.data(), candidate.size()) != 0) {
      throw os_error(errno, "connect " + udp_name(candidate));
    }
    std::unique_ptr<detail::Wake> wake = wake_for(candidate);
    const Address local = Address::local_of(socket.get());
    return DatagramSocket(std::move(socket), std::move(wake), local, candidate);
  });
}

bool DatagramSocket::wait(short events, Clock::time_point until, const char* call,
                          const Address& whom) {
  std::array<pollfd, 2> fds{};
  fds[0] = {socket_.get(), events, 0};
  fds[1] = {wake_->fd(), POLLIN, 0};
  const int ready = poll_until(fds.data(), fds.size(), until);
  if (ready < 0) throw os_error(errno, std::string("poll ") + call + " " + udp_name(whom));
  if (interrupted()) return false;
  if (ready == 0) throw os_error(ETIMEDOUT, std::string(call) + " " + udp_name(whom));
  return true;
}

std::optional<Received> DatagramSocket::receive(char* data, std::size_t capacity,
                                                Clock::time_point until) {
  const Address& whom = peer_.family() == AF_UNSPEC ? address_ : peer_;
  const bool timed = until != Clock::time_point::max();
  for (;;) {
    if (interrupted()) return std::nullopt;
    if (timed && !wait(POLLIN, until, "receive", whom)) return std::nullopt;
    Received got;
    iovec room{data, capacity};
    msghdr message{};
    message.msg_name = got.peer.data();
    message.msg_namelen = Address::capacity();
    message.msg_iov = &room;
    message.msg_iovlen = 1;
    // MSG_TRUNC: the result is the datagram's real length, even past the room given.
    const int flags = MSG_TRUNC | (timed ? MSG_DONTWAIT : 0);
    const ssize_t n = retry_eintr([&] { return ::recvmsg(socket_.get(), &message, flags); });
    if (n >= 0) {
      // interrupt()'s shutdown() wakes a blocked recvmsg() with 0 and no sender: no datagram.
      if (interrupted() && (n == 0 || message.msg_namelen == 0)) return std::nullopt;
      got.peer.set_size(message.msg_namelen);
      got.size = static_cast<std::size_t>(n);
      got.truncated = (message.msg_flags & MSG_TRUNC) != 0 || got.size > capacity;
      return got;
    }
    if (interrupted()) return std::nullopt;
    if (timed && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    throw os_error(errno, "receive " + udp_name(whom));
  }
}

bool DatagramSocket::send_to(const Address& to, const std::string_view* pieces, std::size_t count) {
  const Address& whom = to.family() == AF_UNSPEC ? peer_ : to;
  if (count > kMaxPieces) throw os_error(EMSGSIZE, "send " + udp_name(whom));
  std::array<iovec, kMaxPieces> iov{};
  for (std::size_t i = 0; i < count; ++i) {
    // sendmsg() only reads the pieces; iovec has no const member to say so.
    iov[i] = {const_cast<char*>(pieces[i].data()), pieces[i].size()};
  }
  msghdr message{};
  if (to.family() != AF_UNSPEC) {
    message.msg_name = const_cast<sockaddr*>(to.data());
    message.msg_namelen = to.size();
  }
  message.msg_iov = iov.data();
  message.msg_iovlen = count;
  if (interrupted()) return false;
  // Blocks while the send buffer is full; interrupt()'s shutdown() ends that wait with EPIPE.
  const ssize_t n = retry_eintr([&] { return ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL); });
  // A datagram goes whole or not at all: there is no partial send to loop over.
  if (n >= 0) return true;
  if (interrupted()) return false;
  throw os_error(errno, "send " + udp_name(whom));
}

void DatagramSocket::interrupt() noexcept {
  interrupted_->store(true, std::memory_order_release);
  // Wakes every timed wait in poll() at once and stays readable for the later ones.
  wake_->signal();
  // Wakes every thread blocked in recvmsg() or sendmsg() on the socket, as it does for a
  // listener. On an unconnected UDP socket Linux answers ENOTCONN but marks the socket shut
  // down and wakes its waiters all the same (inet_shutdown() does so on purpose).
  (void)::shutdown(socket_.get(), SHUT_RDWR);
}

std::string read_message(int fd, std::string_view what, std::size_t most) {
  std::string message;
  std::array<char, 16384> chunk{};
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd, chunk.data(), chunk.size()); });
    if (n < 0) throw os_error(errno, "read " + std::string(what));
    if (n == 0) return message;
    message.append(chunk.data(), static_cast<std::size_t>(n));
    if (message.size() > most) {
      throw os_error(EMSGSIZE, "read " + std::string(what) + " (over " + std::to_string(most) +
                                   " bytes, the most one datagram carries)");
    }
  }
}

std::string datagram_request(DatagramSocket& socket, std::string_view message,
                             std::chrono::milliseconds timeout) {
  const Clock::time_point until = end_after(timeout);
  if (!socket.send(message)) throw os_error(ECANCELED, "send " + udp_name(socket.peer()));
  std::string reply(kDatagramBufferSize, '\0');
  const std::optional<Received> got = socket.receive(reply.data(), reply.size(), until);
  if (!got) throw os_error(ECANCELED, "receive " + udp_name(socket.peer()));
  if (got->truncated) throw os_error(EMSGSIZE, "receive " + udp_name(socket.peer()));
  reply.resize(got->size);
  return reply;
}

std::string datagram_request(std::string_view host, std::uint16_t port, std::string_view message,
                             std::chrono::milliseconds timeout) {
  DatagramSocket socket = DatagramSocket::connect(host, port);
  return datagram_request(socket, message, timeout);
}

}  // namespace sockecho
