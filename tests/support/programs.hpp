// The part of the tests' support that knows the built programs: their paths, from CMake, and
// sockecho-server run as a child. Only the tests that run the programs link it
// (sockecho_test_programs), so the in-process tests build without tools/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "support.hpp"

namespace sockecho::test {

// Paths of the built programs, from CMake.
std::string server_program();
std::string client_program();

// sockecho-server started with `args` plus "--port 0"; the port is read from its ready line.
class ServerProcess : public Child {
 public:
  explicit ServerProcess(std::vector<std::string> args = {});
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& ready_line() const { return ready_; }

 private:
  std::string ready_;
  std::uint16_t port_ = 0;
};

}  // namespace sockecho::test
