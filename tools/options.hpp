// The command lines of sockecho-server and sockecho-client, parsed into plain settings. Kept
// apart from the mains so tests and fuzzers can call the parsers directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/server.hpp"

namespace sockecho::cli {

// A command line that cannot be used; what() is the message for the user. Exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint16_t kDefaultPort = 12387;
inline constexpr std::string_view kDefaultHost = "127.0.0.1";
inline constexpr std::chrono::seconds kDefaultClientTimeout{30};

struct ServerSettings {
  std::string host{kDefaultHost};
  std::uint16_t port = kDefaultPort;
  std::string prefix{kDefaultPrefix};
  int backlog = SOMAXCONN;
  bool reuse_port = false;  // --reuseport: SO_REUSEPORT, several processes on one port
  ServerOptions options;    // mode, workers, timeout, max_bytes, greeting
  LogLevel log_level = LogLevel::normal;
  bool help = false;
  bool version = false;
};

struct ClientSettings {
  std::string host{kDefaultHost};
  std::uint16_t port = kDefaultPort;
  std::optional<std::string> send;  // --send TEXT
  std::optional<std::string> file;  // --file PATH ("-" is stdin)
  std::chrono::milliseconds timeout = kDefaultClientTimeout;
  Mode mode = Mode::echo;
  bool quiet = false;
  bool help = false;
  bool version = false;
};

// Parse the arguments after the program name. Throw UsageError.
[[nodiscard]] ServerSettings parse_server_args(const std::vector<std::string_view>& args);
[[nodiscard]] ClientSettings parse_client_args(const std::vector<std::string_view>& args);

// Writes text to stdout or stderr, dropping it when that fails: there is nowhere left to report.
void print(int fd, std::string_view text) noexcept;

// The --help texts.
[[nodiscard]] std::string server_usage();
[[nodiscard]] std::string client_usage();

// Value parsers, exposed for tests. Each throws UsageError naming the flag.
// Seconds with up to three decimals: "30", "0.5"; 0 means none.
[[nodiscard]] std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view text);
// Bytes, optionally with a binary suffix: "65536", "64K", "64M", "1G".
[[nodiscard]] std::size_t parse_size(std::string_view flag, std::string_view text);
// A whole number from min to max.
[[nodiscard]] unsigned long parse_number(std::string_view flag, std::string_view text,
                                         unsigned long min, unsigned long max);

}  // namespace sockecho::cli
