#include "options.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <csignal>
#include <limits>
#include <utility>

#include "sockecho/address.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/jobs.hpp"

namespace sockecho::cli {

ArgReader::ArgReader(const std::vector<std::string_view>& args,
                     std::vector<std::string_view> short_flags)
    : args_(args), short_flags_(std::move(short_flags)) {}

bool ArgReader::next() {
  if (index_ >= args_.size()) return false;
  std::string_view arg = args_[index_++];
  inline_value_.reset();
  if (arg.size() < 3 || arg.substr(0, 2) != "--") {
    if (arg == "-h") {
      arg = "--help";
    } else if (std::find(short_flags_.begin(), short_flags_.end(), arg) == short_flags_.end()) {
      throw UsageError("unexpected argument '" + std::string(arg) + "'");
    }
  } else if (const std::size_t equals = arg.find('='); equals != std::string_view::npos) {
    inline_value_ = arg.substr(equals + 1);
    arg = arg.substr(0, equals);
  }
  flag_ = arg;
  seen_.push_back(flag_);
  return true;
}

bool ArgReader::seen(std::string_view flag) const noexcept {
  return std::find(seen_.begin(), seen_.end(), flag) != seen_.end();
}

std::string_view ArgReader::value() {
  if (inline_value_) return *inline_value_;
  if (index_ >= args_.size()) throw UsageError("option " + std::string(flag_) + " needs a value");
  return args_[index_++];
}

void ArgReader::no_value() const {
  if (inline_value_) throw UsageError("option " + std::string(flag_) + " takes no value");
}

std::vector<std::string> ArgReader::rest() {
  if (inline_value_) throw UsageError("option " + std::string(flag_) + " takes no '=' value");
  std::vector<std::string> out(args_.begin() + static_cast<std::ptrdiff_t>(index_), args_.end());
  index_ = args_.size();
  return out;
}

bool ArgReader::toggle(std::string_view name, bool& on) const {
  if (flag_ != name) return false;
  no_value();
  on = true;
  return true;
}

void ArgReader::unknown() const { throw UsageError("unknown option '" + std::string(flag_) + "'"); }

std::string parse_host(std::string_view text) {
  if (text.empty()) throw UsageError("--host needs a host name or address");
  return std::string(text);
}

std::uint16_t parse_port_flag(std::string_view text) {
  try {
    return parse_port(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--port: ") + e.what());
  }
}

namespace {

// HOST:PORT, IPv6 addresses in brackets; `expected` is what a bad one is told it is not.
Endpoint endpoint_of(std::string_view flag, std::string_view text, std::string_view expected) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find("]:");
    if (close == std::string_view::npos) throw UsageError(bad_value(flag, text, expected));
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.substr(0, colon).find(':') != std::string::npos) {
      throw UsageError(bad_value(flag, text, expected));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) throw UsageError(bad_value(flag, text, expected));
  try {
    return Endpoint{std::string(host), parse_port(port)};
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(flag) + ": " + e.what());
  }
}

// A Unix socket's path for `flag`, checked now so a path that cannot be bound is a usage error
// rather than a failure after the other listeners are up.
std::string unix_path_of(std::string_view flag, std::string_view text) {
  try {
    (void)Address::unix_path(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(flag) + ": " + e.what());
  }
  return std::string(text);
}

}  // namespace

Endpoint parse_endpoint(std::string_view flag, std::string_view text) {
  return endpoint_of(flag, text, "HOST:PORT, such as 127.0.0.1:9100 or [::1]:9100");
}

ListenAddress parse_listen_address(std::string_view flag, std::string_view text) {
  constexpr std::string_view kUnix = "unix:";
  if (text.substr(0, kUnix.size()) == kUnix) {
    ListenAddress address;
    address.unix_path = unix_path_of(flag, text.substr(kUnix.size()));
    return address;
  }
  Endpoint endpoint = endpoint_of(
      flag, text,
      "HOST:PORT or unix:PATH, such as 127.0.0.1:12388, [::1]:12388 or unix:/run/x.sock");
  ListenAddress address;
  address.host = std::move(endpoint.host);
  address.port = endpoint.port;
  return address;
}

std::string parse_unix_path(std::string_view text) { return unix_path_of("--unix", text); }

mode_t parse_unix_mode(std::string_view text) {
  constexpr mode_t kMaxMode = 0777;
  mode_t mode = 0;
  for (const char c : text) {
    if (c < '0' || c > '7' || mode > kMaxMode) {
      throw UsageError(bad_value("--unix-mode", text, "octal permission bits (e.g. 0660)"));
    }
    mode = mode * 8 + static_cast<mode_t>(c - '0');
  }
  if (text.empty() || mode > kMaxMode) {
    throw UsageError(bad_value("--unix-mode", text, "octal permission bits from 0 to 0777"));
  }
  return mode;
}

std::string bad_value(std::string_view flag, std::string_view text, std::string_view expected) {
  return std::string(flag) + ": '" + std::string(text) + "' is not " + std::string(expected);
}

namespace {

Mode parse_mode(std::string_view text) {
  if (text == "echo") return Mode::echo;
  if (text == "line") return Mode::line;
  throw UsageError("--mode must be 'echo' or 'line', not '" + std::string(text) + "'");
}

}  // namespace

// UDP flags (--udp, --udp-rate, --udp-rate-bytes), kept together.
namespace {

constexpr unsigned long kMaxUdpRate = 10'000'000;

bool read_udp_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--udp-rate") {
    s.udp_rate = static_cast<unsigned>(parse_number(flag, reader.value(), 0, kMaxUdpRate));
    return true;
  }
  if (flag == "--udp-rate-bytes") {
    s.udp_rate_bytes = parse_size(flag, reader.value());
    return true;
  }
  return reader.toggle("--udp", s.udp);
}

void check_udp(const ServerSettings& s) {
  if (!s.udp) {
    if (s.udp_rate) throw UsageError("--udp-rate needs --udp");
    if (s.udp_rate_bytes) throw UsageError("--udp-rate-bytes needs --udp");
    return;
  }
  if (s.mode == Mode::line) throw UsageError("--udp is for echo mode, not --mode line");
  if (!s.exec.empty()) throw UsageError("--udp cannot be combined with --exec");
  if (s.drain_delay.count() > 0) {
    throw UsageError("--drain-delay is for connections; --udp stops at once");
  }
}

}  // namespace

unsigned long parse_number(std::string_view flag, std::string_view text, unsigned long min,
                           unsigned long max) {
  const std::string expected =
      "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  if (text.empty()) throw UsageError(bad_value(flag, text, expected));
  unsigned long value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') throw UsageError(bad_value(flag, text, expected));
    const auto digit = static_cast<unsigned long>(c - '0');
    if (digit > max || value > (max - digit) / 10)
      throw UsageError(bad_value(flag, text, expected));
    value = value * 10 + digit;
  }
  if (value < min) throw UsageError(bad_value(flag, text, expected));
  return value;
}

std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view text) {
  constexpr unsigned long kMaxSeconds = 1'000'000;
  const std::string expected = "a number of seconds, at most three decimals (e.g. 30 or 0.5)";
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view fraction =
      dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (whole.empty() ||
      (dot != std::string_view::npos && (fraction.empty() || fraction.size() > 3))) {
    throw UsageError(bad_value(flag, text, expected));
  }
  unsigned long seconds = 0;
  unsigned long millis = 0;
  try {
    seconds = parse_number(flag, whole, 0, kMaxSeconds);
    if (!fraction.empty()) {
      millis = parse_number(flag, fraction, 0, 999);
      for (std::size_t i = fraction.size(); i < 3; ++i) millis *= 10;
    }
  } catch (const UsageError&) {
    throw UsageError(bad_value(flag, text, expected));
  }
  return std::chrono::milliseconds(seconds * 1000 + millis);
}

std::size_t parse_size(std::string_view flag, std::string_view text) {
  const std::string expected = "a byte count (e.g. 65536, 64K, 64M or 1G)";
  const std::string_view original = text;
  unsigned shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      default:
        break;
    }
  }
  if (shift != 0) text.remove_suffix(1);
  const unsigned long max = std::numeric_limits<std::size_t>::max() >> shift;
  try {
    return static_cast<std::size_t>(parse_number(flag, text, 0, max)) << shift;
  } catch (const UsageError&) {
    throw UsageError(bad_value(flag, original, expected));
  }
}

namespace {

constexpr unsigned long kMaxWorkers = 4096;
constexpr unsigned long kMaxConnections = 1000000;
constexpr unsigned long kMaxQueue = 1000000;
// Runs one job may start in all. A thousand is far past any sensible retry policy, yet bounded,
// so a typing slip cannot make a failing job run for ever.
constexpr unsigned long kMaxAttempts = 1000;
// Ended jobs kept at most: a thousand times the default, within what a server can hold.
constexpr unsigned long kMaxKeepMax = 10000000;
// --job-cpu at most, in whole seconds: --exec-timeout's own most.
constexpr unsigned long kMaxJobCpu = 1000000;

// Where the server listens, besides --host and --port: --unix and its file, --backlog,
// --reuseport. True when the current flag was one of them.
bool read_listen_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--unix") {
    s.unix_path = parse_unix_path(reader.value());
  } else if (flag == "--unix-mode") {
    s.unix_mode = parse_unix_mode(reader.value());
  } else if (flag == "--unix-group") {
    const std::string_view group = reader.value();
    if (group.empty()) throw UsageError("--unix-group needs a group name or number");
    s.unix_group = std::string(group);
  } else if (flag == "--backlog") {
    s.backlog = static_cast<int>(parse_number(flag, reader.value(), 1, INT_MAX));
  } else {
    return reader.toggle("--reuseport", s.reuse_port);
  }
  return true;
}

// A program per request or per job: --exec and what goes with it.
bool read_program_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--exec") {
    s.exec = reader.rest();
    if (s.exec.empty() || s.exec[0].empty()) throw UsageError("--exec needs a program");
  } else if (flag == "--exec-timeout") {
    s.exec_timeout = parse_seconds(flag, reader.value());
  } else if (flag == "--jobs") {
    s.jobs = static_cast<unsigned>(parse_number(flag, reader.value(), 1, kMaxWorkers));
  } else if (flag == "--queue") {
    s.queue = parse_number(flag, reader.value(), 0, kMaxQueue);
  } else if (flag == "--max-output") {
    s.max_output = parse_size(flag, reader.value());
  } else if (flag == "--job-memory") {
    s.job_memory = parse_size(flag, reader.value());
  } else if (flag == "--job-cpu") {
    s.job_cpu = std::chrono::seconds(parse_number(flag, reader.value(), 0, kMaxJobCpu));
  } else if (flag == "--spool") {
    s.spool = std::string(reader.value());
    if (s.spool.empty()) throw UsageError("--spool needs a directory");
  } else {
    return reader.toggle("--background", s.background);
  }
  return true;
}

// A background job after its first run: whether it runs again, how long its end is kept, and
// where it can be asked about.
bool read_job_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--status") {
    s.status = parse_listen_address(flag, reader.value());
  } else if (flag == "--retry-delay") {
    const std::string_view text = reader.value();
    s.retry_delay = parse_seconds(flag, text);
    // The delay doubles up to kMaxRetryDelay, so a first one beyond it could never be kept.
    if (s.retry_delay > kMaxRetryDelay) {
      const auto most = std::chrono::duration_cast<std::chrono::seconds>(kMaxRetryDelay);
      throw UsageError(
          bad_value(flag, text, "a number of seconds from 0 to " + std::to_string(most.count())));
    }
  } else if (flag == "--max-attempts") {
    s.max_attempts = static_cast<unsigned>(parse_number(flag, reader.value(), 1, kMaxAttempts));
  } else if (flag == "--keep") {
    const std::string_view text = reader.value();
    s.keep = parse_seconds(flag, text);
    // Elsewhere 0 means "no limit"; here it would mean forgetting every job as it ends, so a
    // client could never learn how its job went. Neither reading is safe to guess.
    if (s.keep.count() == 0) {
      throw UsageError(bad_value(flag, text, "a number of seconds above 0 (e.g. 3600)"));
    }
  } else if (flag == "--keep-max") {
    s.keep_max = parse_number(flag, reader.value(), 1, kMaxKeepMax);
  } else if (flag == "--max-queued-per-source") {
    s.max_queued_per_source = parse_number(flag, reader.value(), 0, kMaxKeepMax);
  } else {
    return false;
  }
  return true;
}

// The limits of connections and requests.
bool read_limit_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--workers") {
    s.options.workers = static_cast<unsigned>(parse_number(flag, reader.value(), 1, kMaxWorkers));
  } else if (flag == "--timeout") {
    s.options.timeout = parse_seconds(flag, reader.value());
  } else if (flag == "--request-timeout") {
    s.limits.request_timeout = parse_seconds(flag, reader.value());
  } else if (flag == "--max-per-source") {
    s.options.max_per_source =
        static_cast<unsigned>(parse_number(flag, reader.value(), 0, kMaxWorkers));
  } else if (flag == "--max-connections") {
    s.options.max_connections =
        static_cast<unsigned>(parse_number(flag, reader.value(), 1, kMaxConnections));
  } else if (flag == "--max-bytes") {
    s.limits.max_bytes = parse_size(flag, reader.value());
  } else if (flag == "--max-total-bytes") {
    s.limits.max_total_bytes = parse_size(flag, reader.value());
  } else {
    return false;
  }
  return true;
}

// What the answers are, and what the daemon says and serves besides them.
bool read_answer_flag(ArgReader& reader, ServerSettings& s) {
  const std::string_view flag = reader.flag();
  if (flag == "--prefix") {
    s.prefix = std::string(reader.value());
  } else if (flag == "--mode") {
    s.mode = parse_mode(reader.value());
  } else if (flag == "--greeting") {
    s.greeting = std::string(reader.value());
  } else if (flag == "--metrics") {
    s.metrics = parse_endpoint(flag, reader.value());
  } else if (flag == "--drain-delay") {
    s.drain_delay = parse_seconds(flag, reader.value());
  } else if (flag == "--quiet" || flag == "--verbose") {
    reader.no_value();
    s.log_level = flag == "--quiet" ? LogLevel::quiet : LogLevel::verbose;
  } else {
    return false;
  }
  return true;
}

// --unix-mode and --unix-group set every Unix socket file the server makes (--unix, --status
// unix:PATH), so at least one of those must be a file: an abstract socket has none.
void check_unix_file(const ServerSettings& s) {
  if (!s.unix_mode && !s.unix_group) return;
  const std::string_view status_path =
      s.status ? std::string_view(s.status->unix_path) : std::string_view();
  if (s.unix_path.empty() && status_path.empty()) {
    throw UsageError("--unix-mode and --unix-group need --unix or --status unix:PATH");
  }
  const auto is_file = [](std::string_view path) { return !path.empty() && path.front() != '@'; };
  if (is_file(s.unix_path) || is_file(status_path)) return;
  throw UsageError(std::string("an abstract socket (") +
                   (s.unix_path.empty() ? "--status unix:@NAME" : "--unix @NAME") +
                   ") has no file: no --unix-mode or --unix-group");
}

// The combinations that make no sense, once every flag is read; --exec's empty default prefix.
void check_server(const ArgReader& reader, ServerSettings& s) {
  if (!s.exec.empty()) {
    if (s.mode == Mode::line) throw UsageError("--exec is for echo mode, not --mode line");
    if (!reader.seen("--prefix")) s.prefix.clear();
  } else if (s.max_output) {
    throw UsageError("--max-output needs --exec");
  } else if (s.background) {
    throw UsageError("--background needs --exec");
  }
  if (s.exec.empty()) {
    // Limits of the programs --exec runs: with no program they would limit nothing.
    for (const std::string_view flag : {"--job-memory", "--job-cpu"}) {
      if (reader.seen(flag)) throw UsageError(std::string(flag) + " needs --exec");
    }
  }
  if (!s.background) {
    // They shape background jobs alone: taken without --background they would do nothing, and
    // the user would believe jobs were kept, retried or answerable when they are not.
    for (const std::string_view flag : {"--spool", "--status", "--retry-delay", "--max-attempts",
                                        "--keep", "--keep-max", "--max-queued-per-source"}) {
      if (reader.seen(flag)) throw UsageError(std::string(flag) + " needs --background");
    }
  }
  if (!s.unix_path.empty()) {
    if (reader.seen("--host") || reader.seen("--port")) {
      throw UsageError("--unix cannot be combined with --host or --port");
    }
    if (s.reuse_port) throw UsageError("--reuseport is for TCP, not --unix");
    if (s.udp) throw UsageError("--udp cannot be combined with --unix");
  }
  check_unix_file(s);
  check_udp(s);
  if (reader.seen("--quiet") && reader.seen("--verbose"))
    throw UsageError("--quiet and --verbose cannot be combined");
  // Echo mode has no greeting: taking the flag there would hide a forgotten --mode line.
  if (reader.seen("--greeting") && s.mode != Mode::line)
    throw UsageError("--greeting needs --mode line");
}

}  // namespace

ServerSettings parse_server_args(const std::vector<std::string_view>& args) {
  ServerSettings s;
  ArgReader reader(args);
  while (reader.next()) {
    if (read_common_flag(reader, s) || read_udp_flag(reader, s) || read_listen_flag(reader, s) ||
        read_program_flag(reader, s) || read_job_flag(reader, s) || read_limit_flag(reader, s) ||
        read_answer_flag(reader, s)) {
      continue;
    }
    reader.unknown();
  }
  check_server(reader, s);
  return s;
}

ClientSettings parse_client_args(const std::vector<std::string_view>& args) {
  ClientSettings s;
  ArgReader reader(args);
  while (reader.next()) {
    if (read_common_flag(reader, s)) continue;
    const std::string_view flag = reader.flag();
    if (flag == "--unix") {
      s.unix_path = parse_unix_path(reader.value());
    } else if (flag == "--send") {
      s.send = std::string(reader.value());
    } else if (flag == "--file") {
      const std::string_view path = reader.value();
      if (path.empty()) throw UsageError("--file needs a path, or - for stdin");
      s.file = std::string(path);
    } else if (flag == "--timeout") {
      s.timeout = parse_seconds(flag, reader.value());
    } else if (flag == "--mode") {
      s.mode = parse_mode(reader.value());
    } else if (!reader.toggle("--quiet", s.quiet) && !reader.toggle("--udp", s.udp)) {
      reader.unknown();
    }
  }
  if (!s.unix_path.empty() && (reader.seen("--host") || reader.seen("--port"))) {
    throw UsageError("--unix cannot be combined with --host or --port");
  }
  if (s.send && s.file) throw UsageError("--send and --file cannot be combined");
  if (s.send && s.mode == Mode::line) {
    throw UsageError("--send is for echo mode; line mode reads --file or stdin");
  }
  if (s.udp && s.mode == Mode::line) throw UsageError("--udp is for echo mode, not --mode line");
  if (s.udp && !s.unix_path.empty()) throw UsageError("--udp cannot be combined with --unix");
  if (s.port == 0) throw UsageError("--port: a client cannot connect to port 0");
  return s;
}

void print(int fd, std::string_view text) noexcept {
  try {
    write_all(fd, text, fd == STDOUT_FILENO ? "stdout" : "stderr");
  } catch (...) {  // NOLINT(bugprone-empty-catch): nowhere left to report it
  }
}

bool prepare_standard_streams(std::string_view name) {
  try {
    ensure_standard_descriptors();
  } catch (const std::exception& e) {
    print(STDERR_FILENO, std::string(name) + ": " + e.what() + "\n");
    return false;
  }
  (void)std::signal(SIGPIPE, SIG_IGN);
  return true;
}

std::string server_usage() {
  return "Usage: sockecho-server [OPTION]...\n"
         "A blocking TCP daemon: each client sends a request and half-closes; the reply is\n"
         "PREFIX followed by the request (echo mode), or PREFIX + line for each line (line mode).\n"
         "\n"
         "  --host HOST        address or name to listen on; 0.0.0.0 or :: for every\n"
         "                     interface (default 127.0.0.1)\n"
         "  --port PORT        TCP port, 0 picks a free one (default 12387)\n"
         "  --unix PATH        listen on a Unix-domain socket at PATH instead of TCP (not with\n"
         "                     --host/--port); a stale socket file there is replaced, the file\n"
         "                     is removed on exit; @NAME: Linux's abstract namespace, no file\n"
         "  --unix-mode OCTAL  the permissions of every socket file (--unix, --status\n"
         "                     unix:PATH): who may connect (default 0660)\n"
         "  --unix-group NAME  their group, a name or gid (default: the server's)\n"
         "  --prefix TEXT      reply prefix (default '数据是 '; '' for a pure echo)\n"
         "  --mode MODE        echo or line (default echo)\n"
         "  --workers N        most requests handled at once, threads started as needed\n"
         "                     and retired when idle; a connection whose request is not\n"
         "                     complete holds none; 1 is strictly serial (default 128)\n"
         "  --max-connections N  connections open at once, reading, waiting or being\n"
         "                     answered; past it new ones wait in the backlog (default\n"
         "                     10000, or what the descriptor hard limit allows)\n"
         "  --timeout SEC      idle limit: close a connection that makes no progress (no byte\n"
         "                     read, no byte of the reply taken) for SEC; 0 = none (default 30)\n"
         "  --request-timeout SEC  longest time to receive one whole request, however slowly\n"
         "                     it trickles in (echo: until the half-close; line: a line);\n"
         "                     0 = none (default 30)\n"
         "  --max-per-source N connections at once from one client address (--unix: one\n"
         "                     user id); one more is reset at once and logged refused;\n"
         "                     0 = no limit (default 0)\n"
         "  --max-bytes N      largest request (line mode: line), K/M/G suffixes allowed;\n"
         "                     0 = no limit (default 64M)\n"
         "  --max-total-bytes N  most request memory held at once by all connections\n"
         "                     and background jobs together; a request that needs more\n"
         "                     is reset as too large, a job answered busy; K/M/G\n"
         "                     suffixes allowed; 0 = no limit (default 1G)\n"
         "  --backlog N        listen backlog (default SOMAXCONN)\n"
         "  --reuseport        share the port with other processes started with --reuseport\n"
         "                     (SO_REUSEPORT); the kernel spreads connections among them\n"
         "  --metrics HOST:PORT  serve Prometheus metrics (GET /metrics) and a health check\n"
         "                     (GET /health: 200, 503 once stopping) over HTTP there;\n"
         "                     prints 'metrics on HOST:PORT' once it listens (default off)\n"
         "  --drain-delay SEC  on a stop signal, say so at once (/health: 503) but go on\n"
         "                     accepting for SEC, so a load balancer takes this instance\n"
         "                     out first; then stop as usual (default 0)\n"
         "  --greeting TEXT    line mode's first line, sent as TEXT and '\\n' ('' sends an\n"
         "                     empty line); --mode line only (default 'connect')\n"
         "  --exec PROGRAM [ARG]...  run PROGRAM (no shell, looked up on PATH) for each\n"
         "                     request: the request on its stdin, the reply PREFIX + its\n"
         "                     stdout (PREFIX empty unless given); the last option, every\n"
         "                     argument after it is the program's; echo mode only\n"
         "  --exec-timeout SEC longest run of the program: then SIGTERM to it and all it\n"
         "                     started, SIGKILL 2 s later, no reply; 0 = none (default 30)\n"
         "  --max-output N     most stdout taken from the program, K/M/G suffixes allowed;\n"
         "                     over it the program is killed, no reply (default --max-bytes)\n"
         "  --job-memory SIZE  with --exec: most resident memory of each run, the program and\n"
         "                     all it starts together, K/M/G suffixes allowed; over it they\n"
         "                     are killed, the run failed with reason=memory; 0 = none\n"
         "                     (default 0)\n"
         "  --job-cpu SEC      with --exec: most CPU time of each run, whole seconds, the\n"
         "                     program and all it starts together; over it they are\n"
         "                     killed, the run failed with reason=cpu; 0 = none (default 0)\n"
         "  --background       with --exec: answer 'accepted ID' as soon as the request is\n"
         "                     in, close, and run the program afterwards; 'busy' when the\n"
         "                     queue is full; a stop runs every accepted job first\n"
         "  --jobs N           background programs run at once (default 4)\n"
         "  --queue N          background jobs waiting beyond those (default 64)\n"
         "  --spool DIR        with --background: keep jobs in DIR, acknowledged only once\n"
         "                     on disk (synced); a start runs what a crash or a stop left\n"
         "  --status ADDR      with --background: answer 'status|result|cancel|retry ID'\n"
         "                     on HOST:PORT or unix:PATH (no prefix); prints 'status on\n"
         "                     ADDR' once it listens (default off)\n"
         "  --retry-delay SEC  with --background: wait before running again a job whose\n"
         "                     program exited 75, doubled each time up to 1 h; 0 to 3600,\n"
         "                     0 = at once (default 10)\n"
         "  --max-attempts N   with --background: runs one job may start in all (retries,\n"
         "                     and runs the server's death cut short); 1 = never again\n"
         "                     (default 5)\n"
         "  --keep SEC         with --background: how long an ended job's state and output\n"
         "                     are kept for --status, from its end; not 0 (default 3600)\n"
         "  --keep-max N       with --background: most ended jobs kept; past it the oldest\n"
         "                     is forgotten (default 10000)\n"
         "  --max-queued-per-source N  with --background: jobs queued or retrying from one\n"
         "                     client address (or Unix user) at once; one more is 'busy'\n"
         "                     (reason=queued_per_source); queued jobs start in turns\n"
         "                     between sources whatever it is (default 0: no limit)\n"
         "  --quiet            log problems only\n"
         "  --verbose          also log each connection as it opens (not with --quiet)\n"
         "  --udp              serve UDP datagrams instead of TCP (echo mode): each datagram\n"
         "                     gets one back, PREFIX + data, whole or not at all; prints\n"
         "                     'listening on udp:HOST:PORT'\n"
         "  --udp-rate N       datagrams a second answered per source address; more are\n"
         "                     dropped until it refills; 0 = no limit (default 1000)\n"
         "  --udp-rate-bytes SIZE  reply bytes a second sent per source address, K/M/G\n"
         "                     suffixes allowed; 0 = no limit (default 1M)\n"
         "  -h, --help         show this help and exit\n"
         "  --version          show the version and exit\n"
         "\n"
         "Prints 'listening on HOST:PORT' (or 'listening on unix:PATH', 'listening on\n"
         "udp:HOST:PORT') on stdout once ready, then 'metrics on HOST:PORT' with --metrics,\n"
         "then 'status on ADDR' with --status; logs go to stderr.\n"
         "SIGINT, SIGTERM or SIGHUP: stop accepting, finish connections in flight, exit 0;\n"
         "a second one ends the server at once, killed by that signal.\n"
         "Socket activation: given a listening socket by systemd (LISTEN_FDS, LISTEN_PID),\n"
         "it serves that socket and does not bind --host/--port.\n"
         "Exit status: 0 clean shutdown, 1 runtime failure, 2 usage error; after a second\n"
         "stop signal the shell's 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP).\n";
}

std::string client_usage() {
  return "Usage: sockecho-client [OPTION]...\n"
         "Sends a message to a sockecho server, half-closes, and prints the reply on stdout\n"
         "as it arrives (it reads while it sends, so a server that streams works too).\n"
         "\n"
         "  --host HOST        server address or name (default 127.0.0.1)\n"
         "  --port PORT        server port (default 12387)\n"
         "  --unix PATH        connect to the Unix-domain socket at PATH instead (@NAME: an\n"
         "                     abstract one); not with --host/--port\n"
         "  --send TEXT        the message, byte for byte (default 'hello' and a newline)\n"
         "  --file PATH        send a file's bytes instead; - reads stdin\n"
         "  --timeout SEC      limit on connecting and on each wait for the reply;\n"
         "                     0 = none (default 30)\n"
         "  --mode MODE        echo or line (default echo); line sends --file or stdin line\n"
         "                     by line and prints the greeting and each reply as it arrives\n"
         "  --quiet            no status lines on stderr\n"
         "  --udp              send the message as one UDP datagram and print the one reply;\n"
         "                     no reply within --timeout: exit 1 (echo mode only)\n"
         "  -h, --help         show this help and exit\n"
         "  --version          show the version and exit\n"
         "\n"
         "Exit status: 0 success; 1 connection, I/O or timeout failure, a reset by the\n"
         "server (the request was not answered: one of its limits), a request cut (the\n"
         "server ended the connection before the whole request was sent: 'request cut\n"
         "after N of M bytes'), or in line mode lines left unanswered; 2 usage error.\n"
         "After 1, stdout holds no whole reply.\n";
}

}  // namespace sockecho::cli
