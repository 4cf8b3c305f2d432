// Fuzz target: the command-line parsers of sockecho-server, sockecho-client (tools/options.hpp)
// and sockecho-bench (tools/bench.hpp), which share one argument reader. Whole command lines must
// either parse into settings that keep their invariants or fail with UsageError, never anything
// else; the value parsers must agree with plain reference implementations on every input.
//
// Input: byte 0 picks the parser (modulo 6: server, client, seconds, size, number, bench); for
// whole command lines the rest is the arguments, separated by NUL bytes (as argv cannot hold one);
// for parse_number, 16 bytes of min and max come first.
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "bench.hpp"
#include "fuzz.hpp"
#include "options.hpp"

namespace {

using sockecho::cli::UsageError;
using Args = std::vector<std::string_view>;
// Wide enough that no reference computation below can overflow.
__extension__ using Wide = unsigned __int128;

Args split_args(std::string_view text) {
  Args args;
  if (text.empty()) return args;
  for (;;) {
    const std::size_t nul = text.find('\0');
    args.push_back(text.substr(0, nul));
    if (nul == std::string_view::npos) return args;
    text.remove_prefix(nul + 1);
  }
}

// Runs parse; returns whether it succeeded. Any exception other than UsageError escapes, which
// ends the run as a crash.
template <typename Parse>
bool parses(Parse parse) {
  try {
    parse();
    return true;
  } catch (const UsageError& e) {
    SOCKECHO_FUZZ_CHECK(std::string_view(e.what()).size() > 0);
    return false;
  }
}

// A decimal number, digits only, or nothing when text is not one or exceeds `max`.
bool reference_number(std::string_view text, Wide max, Wide& value) {
  if (text.empty()) return false;
  value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > max) return false;
  }
  return true;
}

void server_args(std::string_view text) {
  Args args = split_args(text);
  sockecho::cli::ServerSettings s;
  if (!parses([&] { s = sockecho::cli::parse_server_args(args); })) return;
  SOCKECHO_FUZZ_CHECK(!s.host.empty());
  SOCKECHO_FUZZ_CHECK(s.options.workers >= 1 && s.options.workers <= 4096);
  SOCKECHO_FUZZ_CHECK(s.backlog >= 1);
  SOCKECHO_FUZZ_CHECK(s.options.timeout.count() >= 0);
  SOCKECHO_FUZZ_CHECK(s.mode == sockecho::cli::Mode::echo || s.mode == sockecho::cli::Mode::line);
  // UDP: echo mode only, no --exec; --udp-rate only with it.
  SOCKECHO_FUZZ_CHECK(!s.udp || (s.mode == sockecho::cli::Mode::echo && s.exec.empty()));
  SOCKECHO_FUZZ_CHECK(s.udp || !s.udp_rate);
  // --greeting only with --mode line.
  SOCKECHO_FUZZ_CHECK(s.mode == sockecho::cli::Mode::line ||
                      s.greeting == sockecho::kDefaultGreeting);
  // --quiet and --verbose together are a usage error, wherever they come (before any --exec).
  if (s.exec.empty()) {
    Args both = args;
    both.emplace_back("--quiet");
    both.emplace_back("--verbose");
    SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::cli::parse_server_args(both); }));
  }
  // The last occurrence of a flag wins, and nothing else changes; after --exec, every argument
  // is the program's, flags included.
  const bool exec = !s.exec.empty();
  // --port never joins --unix (unless it is the program's, after --exec).
  const bool unix_socket = !s.unix_path.empty() && !exec;
  if (unix_socket) {
    Args with_port = args;
    with_port.emplace_back("--port=7");
    SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::cli::parse_server_args(with_port); }));
  } else {
    args.emplace_back("--port=7");
  }
  args.emplace_back("--workers");
  args.emplace_back("3");
  const sockecho::cli::ServerSettings t = sockecho::cli::parse_server_args(args);
  SOCKECHO_FUZZ_CHECK(t.unix_path == s.unix_path && t.unix_mode == s.unix_mode);
  if (exec) {
    SOCKECHO_FUZZ_CHECK(t.port == s.port && t.options.workers == s.options.workers);
    SOCKECHO_FUZZ_CHECK(t.exec.size() == s.exec.size() + 3 && t.exec.back() == "3");
  } else {
    SOCKECHO_FUZZ_CHECK(t.port == (unix_socket ? s.port : 7) && t.options.workers == 3);
  }
  SOCKECHO_FUZZ_CHECK(t.host == s.host && t.prefix == s.prefix && t.backlog == s.backlog);
  SOCKECHO_FUZZ_CHECK(t.options.timeout == s.options.timeout);
  SOCKECHO_FUZZ_CHECK(t.limits.max_bytes == s.limits.max_bytes);
  SOCKECHO_FUZZ_CHECK(t.limits.max_total_bytes == s.limits.max_total_bytes);
  SOCKECHO_FUZZ_CHECK(t.udp == s.udp && t.udp_rate == s.udp_rate);
  // An unknown flag anywhere after a valid command line is a usage error (a program's argument
  // after --exec).
  args.emplace_back("--no-such-flag");
  SOCKECHO_FUZZ_CHECK(parses([&] { (void)sockecho::cli::parse_server_args(args); }) == exec);
}

void client_args(std::string_view text) {
  Args args = split_args(text);
  sockecho::cli::ClientSettings s;
  if (!parses([&] { s = sockecho::cli::parse_client_args(args); })) return;
  SOCKECHO_FUZZ_CHECK(!s.host.empty());
  SOCKECHO_FUZZ_CHECK(!(s.send && s.file));
  SOCKECHO_FUZZ_CHECK(!(s.send && s.mode == sockecho::cli::Mode::line));
  SOCKECHO_FUZZ_CHECK(!s.file || !s.file->empty());
  SOCKECHO_FUZZ_CHECK(s.timeout.count() >= 0);
  SOCKECHO_FUZZ_CHECK(!(s.udp && s.mode == sockecho::cli::Mode::line));
  SOCKECHO_FUZZ_CHECK(s.port != 0);  // nothing to connect to
  args.emplace_back("--port");
  args.emplace_back("65535");
  if (!s.unix_path.empty()) {  // --port never joins --unix
    SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::cli::parse_client_args(args); }));
    return;
  }
  const sockecho::cli::ClientSettings t = sockecho::cli::parse_client_args(args);
  SOCKECHO_FUZZ_CHECK(t.port == 65535 && t.host == s.host && t.send == s.send && t.file == s.file &&
                      t.timeout == s.timeout);
}

void bench_args(std::string_view text) {
  Args args = split_args(text);
  sockecho::bench::BenchSettings s;
  if (!parses([&] { s = sockecho::bench::parse_bench_args(args); })) return;
  SOCKECHO_FUZZ_CHECK(!s.host.empty());
  SOCKECHO_FUZZ_CHECK(s.concurrency >= 1 && s.concurrency <= 1024);
  // Either a number of requests or a duration, never both.
  SOCKECHO_FUZZ_CHECK((s.requests == 0) != (s.duration.count() == 0));
  SOCKECHO_FUZZ_CHECK(s.requests <= 1'000'000'000'000U);
  SOCKECHO_FUZZ_CHECK(s.sources <= 250);
  SOCKECHO_FUZZ_CHECK(s.timeout.count() >= 0);
  if (!s.unix_path.empty()) {  // a Unix socket is reached without --host, --port or --sources
    Args tcp = args;
    tcp.emplace_back("--sources=0");
    SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::bench::parse_bench_args(tcp); }));
  }
  // The short and the long form of --concurrency are one flag: the last one wins.
  args.emplace_back("--concurrency=3");
  args.emplace_back("-c");
  args.emplace_back("5");
  const sockecho::bench::BenchSettings t = sockecho::bench::parse_bench_args(args);
  SOCKECHO_FUZZ_CHECK(t.concurrency == 5 && t.host == s.host && t.port == s.port);
  SOCKECHO_FUZZ_CHECK(t.requests == s.requests && t.duration == s.duration && t.size == s.size);
  SOCKECHO_FUZZ_CHECK(t.prefix == s.prefix && t.timeout == s.timeout);
  // The short flag takes no inline value, and it is the bench's alone.
  args.emplace_back("-c=4");
  SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::bench::parse_bench_args(args); }));
  SOCKECHO_FUZZ_CHECK(!parses([&] { (void)sockecho::cli::parse_server_args({"-c", "4"}); }));
}

void seconds(std::string_view text) {
  std::chrono::milliseconds got{};
  const bool ok = parses([&] { got = sockecho::cli::parse_seconds("--timeout", text); });
  // Reference: WHOLE or WHOLE.FRACTION, WHOLE at most 1,000,000, FRACTION 1 to 3 digits.
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view fraction =
      dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  Wide w = 0;
  Wide f = 0;
  bool valid = reference_number(whole, 1'000'000, w);
  if (dot != std::string_view::npos) {
    valid =
        valid && !fraction.empty() && fraction.size() <= 3 && reference_number(fraction, 999, f);
    for (std::size_t i = fraction.size(); i < 3; ++i) f *= 10;
  }
  SOCKECHO_FUZZ_CHECK(ok == valid);
  if (ok) SOCKECHO_FUZZ_CHECK(static_cast<Wide>(got.count()) == w * 1000 + f);
}

void size(std::string_view text) {
  std::size_t got = 0;
  const bool ok = parses([&] { got = sockecho::cli::parse_size("--max-bytes", text); });
  // Reference: digits, then optionally one of K, M, G (either case) for 2^10, 2^20, 2^30.
  unsigned shift = 0;
  std::string_view digits = text;
  constexpr std::string_view kSuffixes = "kmg";
  const std::size_t suffix = digits.empty()
                                 ? std::string_view::npos
                                 : kSuffixes.find(static_cast<char>(digits.back() | 0x20));
  if (suffix != std::string_view::npos) {
    shift = 10 * static_cast<unsigned>(suffix + 1);
    digits.remove_suffix(1);
  }
  Wide value = 0;
  const bool valid = reference_number(digits, std::numeric_limits<std::size_t>::max(), value) &&
                     (value << shift) <= std::numeric_limits<std::size_t>::max();
  SOCKECHO_FUZZ_CHECK(ok == valid);
  if (ok) SOCKECHO_FUZZ_CHECK(got == (value << shift));
}

void number(sockecho::fuzz::Input& input) {
  const auto min = static_cast<unsigned long>(input.number(8));
  const auto max = static_cast<unsigned long>(input.number(8));
  const std::string_view text = input.rest();
  unsigned long got = 0;
  const bool ok = parses([&] { got = sockecho::cli::parse_number("--n", text, min, max); });
  Wide value = 0;
  const bool valid = reference_number(text, max, value) && value >= min;
  SOCKECHO_FUZZ_CHECK(ok == valid);
  if (ok) SOCKECHO_FUZZ_CHECK(got == value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size_in) {
  sockecho::fuzz::Input input(data, size_in);
  switch (input.byte() % 6) {
    case 0:
      server_args(input.rest());
      break;
    case 1:
      client_args(input.rest());
      break;
    case 2:
      seconds(input.rest());
      break;
    case 3:
      size(input.rest());
      break;
    case 4:
      number(input);
      break;
    default:
      bench_args(input.rest());
      break;
  }
  return 0;
}
