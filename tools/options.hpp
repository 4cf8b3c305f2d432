// The command lines of sockecho-server and sockecho-client, parsed into plain settings, and the
// argument reader and value parsers every sockecho program's parser uses (sockecho-bench's too).
// Kept apart from the mains so tests and fuzzers can call the parsers directly.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sockecho/address.hpp"
#include "sockecho/daemon.hpp"
#include "sockecho/version.hpp"

namespace sockecho::cli {

// A command line that cannot be used; what() is the message for the user. Exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using sockecho::kDefaultHost;
using sockecho::kDefaultPort;
inline constexpr std::chrono::seconds kDefaultClientTimeout{30};
using sockecho::Endpoint;
using sockecho::Mode;

// sockecho-server's command line: the Daemon's options, and what the program answers itself.
struct ServerSettings : DaemonOptions {
  bool help = false;
  bool version = false;
};

struct ClientSettings {
  std::string host{kDefaultHost};
  std::uint16_t port = kDefaultPort;
  std::string unix_path;            // --unix PATH: connect to a Unix-domain socket; empty: TCP
  std::optional<std::string> send;  // --send TEXT
  std::optional<std::string> file;  // --file PATH ("-" is stdin)
  std::chrono::milliseconds timeout = kDefaultClientTimeout;
  Mode mode = Mode::echo;
  bool quiet = false;
  bool udp = false;  // --udp: one datagram out, one back
  bool help = false;
  bool version = false;
};

// Walks a command line of "--flag", "--flag VALUE" and "--flag=VALUE" arguments; "-h" stands for
// "--help". A program may take short flags as well, named in short_flags (sockecho-bench's "-c"):
// flag() is then the short flag as written, and its value is always the next argument ("-c 4";
// "-c=4" and "-c4" are not flags). Anything else is a UsageError. It keeps a reference to args.
class ArgReader {
 public:
  explicit ArgReader(const std::vector<std::string_view>& args,
                     std::vector<std::string_view> short_flags = {});

  // Moves to the next flag; false at the end. Throws UsageError for an argument that is no flag.
  bool next();
  // The current flag, without its inline value: "--port" for "--port=80".
  [[nodiscard]] std::string_view flag() const noexcept { return flag_; }
  // The flag's value, inline or the next argument. Throws UsageError when there is none.
  std::string_view value();
  // For flags without a value: throws UsageError when one was given inline.
  void no_value() const;
  // A flag without a value that sets `on`: true (and `on` set) when the current flag is `name`.
  bool toggle(std::string_view name, bool& on) const;
  // Throws the UsageError for a flag the program does not know.
  [[noreturn]] void unknown() const;
  // Every argument after the current flag, taken as they are (no more flags): --exec's program.
  std::vector<std::string> rest();
  // Whether `flag` ("--port", "--help" for -h too) came up so far, the current one included:
  // what a parser checks combinations and defaults by once every flag is read.
  [[nodiscard]] bool seen(std::string_view flag) const noexcept;

 private:
  const std::vector<std::string_view>& args_;
  std::vector<std::string_view> short_flags_;
  std::size_t index_ = 0;
  std::string_view flag_;
  std::optional<std::string_view> inline_value_;
  std::vector<std::string_view> seen_;  // every flag next() has returned
};

// Value parsers, exposed for tests and for sockecho-bench. Each throws UsageError naming the flag.
// --host: any non-empty text (resolved later).
[[nodiscard]] std::string parse_host(std::string_view text);
// --port: 0 to 65535.
[[nodiscard]] std::uint16_t parse_port_flag(std::string_view text);
// --unix: a path (or "@name") that fits a Unix-domain address.
[[nodiscard]] std::string parse_unix_path(std::string_view text);
// --unix-mode: octal permission bits, 0 to 0777 ("0660", "660").
[[nodiscard]] mode_t parse_unix_mode(std::string_view text);

// The server a client's settings name, as messages write it: "127.0.0.1:12387" or, with --unix,
// "unix:/run/x.sock".
template <typename Settings>
[[nodiscard]] std::string target_name(const Settings& settings) {
  return settings.unix_path.empty() ? join_host_port(settings.host, settings.port)
                                    : Address::unix_path(settings.unix_path).to_string();
}

// The flags every sockecho program takes, --host, --port, --help (or -h) and --version, read into
// the members of those names of its settings. True when the current flag was one of them.
template <typename Settings>
bool read_common_flag(ArgReader& reader, Settings& settings) {
  const std::string_view flag = reader.flag();
  if (flag == "--host") {
    settings.host = parse_host(reader.value());
  } else if (flag == "--port") {
    settings.port = parse_port_flag(reader.value());
  } else {
    return reader.toggle("--help", settings.help) || reader.toggle("--version", settings.version);
  }
  return true;
}

// Parse the arguments after the program name. Throw UsageError.
[[nodiscard]] ServerSettings parse_server_args(const std::vector<std::string_view>& args);
[[nodiscard]] ClientSettings parse_client_args(const std::vector<std::string_view>& args);

// Writes text to stdout or stderr, dropping it when that fails: there is nowhere left to report.
void print(int fd, std::string_view text) noexcept;

// What a sockecho program does first in main(), before anything opens a descriptor: /dev/null
// on each of 0, 1 and 2 that is closed (as some supervisors start programs), so no socket takes
// that number, and SIGPIPE ignored, so a reader of stdout or stderr that has gone away is a
// write that fails with EPIPE, handled, never the end of the program (sockets never raise it:
// MSG_NOSIGNAL). False, said on stderr as "NAME: ..." where it can be, when /dev/null cannot
// be opened.
[[nodiscard]] bool prepare_standard_streams(std::string_view name);

inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// The frame every sockecho program shares: parses the arguments after argv[0] with `parse` (a
// UsageError becomes a message and exit 2), answers --help with usage() and --version, then
// returns run(settings) (an exception becomes one line, "NAME: what", and exit 1). The settings
// type needs `help` and `version` members.
template <typename Parse, typename Run>
int run_program(std::string_view name, int argc, char** argv, Parse parse, std::string (*usage)(),
                Run run) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  decltype(parse(args)) settings;
  try {
    settings = parse(args);
  } catch (const UsageError& e) {
    print(STDERR_FILENO, std::string(name) + ": " + e.what() + "\nTry '" + std::string(name) +
                             " --help' for more information.\n");
    return kExitUsage;
  }
  if (settings.help) {
    print(STDOUT_FILENO, usage());
    return 0;
  }
  if (settings.version) {
    print(STDOUT_FILENO, std::string(name) + " " + kVersion + "\n");
    return 0;
  }
  try {
    return run(settings);
  } catch (const UsageError& e) {  // found unusable only once checked (an --exec program)
    print(STDERR_FILENO, std::string(name) + ": " + e.what() + "\n");
    return kExitUsage;
  } catch (const std::exception& e) {
    print(STDERR_FILENO, std::string(name) + ": " + e.what() + "\n");
    return kExitFailure;
  }
}

// The --help texts.
[[nodiscard]] std::string server_usage();
[[nodiscard]] std::string client_usage();

// More value parsers.
// Seconds with up to three decimals: "30", "0.5"; 0 means none.
[[nodiscard]] std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view text);
// Bytes, optionally with a binary suffix: "65536", "64K", "64M", "1G".
[[nodiscard]] std::size_t parse_size(std::string_view flag, std::string_view text);
// A whole number from min to max.
[[nodiscard]] unsigned long parse_number(std::string_view flag, std::string_view text,
                                         unsigned long min, unsigned long max);
// The message for a value a flag cannot take: "FLAG: 'TEXT' is not EXPECTED".
// --metrics's HOST:PORT; IPv6 addresses in brackets. Throws UsageError naming the flag.
[[nodiscard]] Endpoint parse_endpoint(std::string_view flag, std::string_view text);
// --status's HOST:PORT (as parse_endpoint) or unix:PATH (PATH as --unix takes it, "@NAME" for an
// abstract socket). Throws UsageError naming the flag.
[[nodiscard]] ListenAddress parse_listen_address(std::string_view flag, std::string_view text);
[[nodiscard]] std::string bad_value(std::string_view flag, std::string_view text,
                                    std::string_view expected);

}  // namespace sockecho::cli
