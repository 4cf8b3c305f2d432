// sockecho: the one handler type. A handler turns a request (its bytes, who sent it, where it
// arrived) into a reply whose outcome is a value. Every way of serving takes it: the echo and
// line protocols over a stream, and the datagram server.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/address.hpp"
#include "sockecho/export.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

class Connection;

// One request as a handler sees it: its bytes (echo: everything the client sent; line: one line
// without its '\n'; a datagram: its payload) and where it came from. Valid only during the
// handler call.
class SOCKECHO_EXPORT Request {
 public:
  // A request that came over `connection`.
  Request(std::string_view bytes, const Connection& connection) noexcept;
  // A request whose local address is known already (a datagram, to the socket it arrived at).
  Request(std::string_view bytes, const Address& peer, const Address& local) noexcept
      : bytes_(bytes), peer_(&peer), local_(&local) {}

  [[nodiscard]] std::string_view bytes() const noexcept { return bytes_; }
  // The sender: an IP address and port, or a Unix-domain peer with its Credentials.
  [[nodiscard]] const Address& peer() const noexcept { return *peer_; }
  // The address the request arrived at (a connection's getsockname, asked only when wanted).
  [[nodiscard]] Address local() const;

 private:
  std::string_view bytes_;
  const Address* peer_;
  const Address* local_ = nullptr;          // set for a datagram
  const Connection* connection_ = nullptr;  // set for a stream
};

// The reply a handler builds: byte pieces written back in order, gathered into one system call,
// and how the request ended.
//
// A reply is an answer by default, outcome ok. set_outcome() keeps it an answer that is no
// success (a full queue's "busy"): it is sent whole, a stream closes cleanly after it, and the
// log line carries the outcome. fail() makes it no answer at all (a program that failed): nothing
// of it is sent, a stream is reset (so no client mistakes it for an answer) and a datagram gets no
// reply. Either is the last reply of its connection.
class SOCKECHO_EXPORT Reply {
 public:
  // Appends a copy of bytes.
  void append(std::string_view bytes);
  // Appends bytes without copying them. They must stay valid until the reply is sent, after the
  // handler returns: a part of the request, or data that outlives the server (a prefix it holds).
  void append_ref(std::string_view bytes);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  // Empties the reply, keeping its memory for the next one: an answer, outcome ok, again.
  void clear() noexcept;
  // Drops the pieces appended after the reply was `size` bytes long (a size it had).
  void truncate(std::size_t size) noexcept;

  // The answer's outcome, and key=value words for its log line ("reason=busy", "job=ID"): an
  // outcome other than ok makes it an answer that is still not a success.
  void set_outcome(Outcome outcome, std::string fields = {});
  // No answer: the request ends unanswered with `outcome`, `detail` (the error message for the
  // log) and `fields` ("exit=3").
  void fail(Outcome outcome, std::string detail, std::string fields = {});

  [[nodiscard]] Outcome outcome() const noexcept { return outcome_; }
  [[nodiscard]] bool answered() const noexcept { return answered_; }
  [[nodiscard]] const std::string& fields() const noexcept { return fields_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }
  // Replaces `out` with the pieces in order; valid until the reply next changes.
  void pieces(std::vector<std::string_view>& out) const;

 private:
  struct Piece {
    const char* data;  // nullptr: the piece lives in owned_ at offset
    std::size_t offset;
    std::size_t size;
  };
  std::vector<Piece> pieces_;
  std::string owned_;
  std::size_t size_ = 0;
  Outcome outcome_ = Outcome::ok;
  bool answered_ = true;
  std::string fields_;
  std::string detail_;
};

// Turns one request into a reply. Called concurrently from every worker thread. An exception it
// throws ends that request unanswered (outcome "error") and the server goes on.
using Handler = std::function<void(const Request& request, Reply& reply)>;

// What a program run for `request` finds in its environment besides the server's, as
// "NAME=value". Over TCP: PROTO=TCP, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT (the
// ucspi-tcp names), REMOTE_ADDR and REMOTE_PORT (CGI's). Over a Unix socket, the ucspi-unix
// names instead: PROTO=UNIX, UNIXLOCALPATH (the socket's path), and the peer's credentials
// UNIXREMOTEEUID, UNIXREMOTEEGID, UNIXREMOTEPID; no TCP or REMOTE_ variables.
[[nodiscard]] SOCKECHO_EXPORT std::vector<std::string> exec_environment(const Request& request);

// The prefix sockecho-server answers with unless --prefix says otherwise (and DaemonOptions'
// default): "数据是 " ("the data is ") in UTF-8.
inline constexpr std::string_view kServerDefaultPrefix = "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ";

// The echo handler: the reply is `prefix` followed by the request, neither copied.
[[nodiscard]] SOCKECHO_EXPORT Handler prefix_handler(std::string prefix);

}  // namespace sockecho
