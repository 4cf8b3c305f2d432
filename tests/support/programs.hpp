// The part of the tests' support that knows the built programs: their paths, from CMake, and
// sockecho-server run as a child. Only the tests that run the programs link it
// (sockecho_test_programs), so the in-process tests build without tools/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "support.hpp"

namespace sockecho::test {

// Paths of the built programs, from CMake.
std::string server_program();
std::string client_program();

// sockecho-server's argv for a socket-activated start: LISTEN_PID must be the pid of the server
// itself, known only once it runs, so a shell sets it to its own pid ($$) and exec()s the server,
// which keeps that pid.
std::vector<std::string> activated(const std::vector<std::string>& server_args);
// Passes the given descriptors on as 3, 4, ... with LISTEN_FDS counting them.
SpawnOptions passing(const std::vector<int>& fds);

// sockecho-server started with `args` plus "--port 0"; the port is read from its ready line.
// With "--unix PATH" among `args`, no "--port 0" (the two exclude each other) and no port.
class ServerProcess : public Child {
 public:
  explicit ServerProcess(const std::vector<std::string>& args = {});
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& ready_line() const { return ready_; }

 private:
  std::string ready_;
  std::uint16_t port_ = 0;
};

// sockecho-server with exactly `args` (no "--port 0" added: a test that shares a port it already
// has, as --reuseport does). ready() is its ready line, nullopt when it printed none.
class FixedPortServer : public Child {
 public:
  explicit FixedPortServer(const std::vector<std::string>& args);
  [[nodiscard]] const std::optional<std::string>& ready() const { return ready_; }

 private:
  std::optional<std::string> ready_;
};

// sockecho-server with --metrics 127.0.0.1:0 and `args`; metrics_port() is the port of its
// second stdout line, "metrics on 127.0.0.1:PORT" (0 when it printed none).
class MeteredServer : public ServerProcess {
 public:
  explicit MeteredServer(std::vector<std::string> args);
  [[nodiscard]] std::uint16_t metrics_port() const { return metrics_port_; }

 private:
  std::uint16_t metrics_port_ = 0;
};

// One sockecho-server behind HAProxy: its port, and the port of its metrics listener when
// HAProxy is to take it out by its /health (0: HAProxy's own TCP check).
struct Backend {
  std::uint16_t port = 0;
  std::uint16_t health_port = 0;
};

// docs/operations.md's recipe: HAProxy in TCP mode, bound to `bind`, spreading connections
// round-robin over `backends`. Its timeouts are longer than sockecho's --timeout (30 s), so
// sockecho decides when a client is too slow. When backends have health ports, its recipe for
// draining too: /health is asked every 100 ms and an instance is out at its first 503, and a
// connection it refuses meanwhile is tried again (retries) on another instance (redispatch).
std::string haproxy_config(const std::string& bind, const std::vector<Backend>& backends);

}  // namespace sockecho::test
