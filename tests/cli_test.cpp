// The command-line parsers of sockecho-server and sockecho-client, and the argument reader all
// three programs share (tools/options.hpp).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "options.hpp"

namespace sockecho::cli {
namespace {

using namespace std::chrono_literals;
using Args = std::vector<std::string_view>;

// The message of the UsageError that parsing `args` throws; "" (and a failure) when none.
template <typename Parse>
std::string usage_error(Parse parse, const Args& args) {
  try {
    (void)parse(args);
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no UsageError";
  return "";
}

std::string server_error(const Args& args) { return usage_error(parse_server_args, args); }
std::string client_error(const Args& args) { return usage_error(parse_client_args, args); }

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// --- sockecho-server ---

TEST(ServerArgs, DefaultsMatchTheContract) {
  const ServerSettings s = parse_server_args({});
  EXPECT_EQ(s.host, "127.0.0.1");
  EXPECT_EQ(s.port, kDefaultPort);
  EXPECT_EQ(s.prefix, "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ");
  EXPECT_EQ(s.prefix, "数据是 ");
  EXPECT_EQ(s.backlog, SOMAXCONN);
  EXPECT_EQ(s.mode, cli::Mode::echo);
  EXPECT_EQ(s.options.workers, 128U);
  EXPECT_EQ(s.options.timeout, 30s);
  EXPECT_EQ(s.limits.max_bytes, std::size_t{64} * 1024 * 1024);
  EXPECT_EQ(s.limits.max_total_bytes, std::size_t{1} << 30);
  EXPECT_EQ(s.greeting, "connect");
  EXPECT_EQ(s.log_level, LogLevel::normal);
  EXPECT_FALSE(s.help);
  EXPECT_FALSE(s.version);
}

TEST(ServerArgs, ReadsEveryFlag) {
  const ServerSettings s =
      parse_server_args({"--host",    "::1",       "--port",      "0",          "--prefix",
                         ">",         "--mode",    "line",        "--workers",  "1",
                         "--timeout", "2.5",       "--max-bytes", "1K",         "--max-total-bytes",
                         "3M",        "--backlog", "7",           "--greeting", "hi",
                         "--verbose"});
  EXPECT_EQ(s.host, "::1");
  EXPECT_EQ(s.port, 0);
  EXPECT_EQ(s.prefix, ">");
  EXPECT_EQ(s.mode, cli::Mode::line);
  EXPECT_EQ(s.options.workers, 1U);
  EXPECT_EQ(s.options.timeout, 2500ms);
  EXPECT_EQ(s.limits.max_bytes, 1024U);
  EXPECT_EQ(s.limits.max_total_bytes, std::size_t{3} << 20);
  EXPECT_EQ(s.backlog, 7);
  EXPECT_EQ(s.greeting, "hi");
  EXPECT_EQ(s.log_level, LogLevel::verbose);
}

TEST(ServerArgs, DrainDelay) {
  EXPECT_EQ(parse_server_args({}).drain_delay, 0ms);
  EXPECT_EQ(parse_server_args({"--drain-delay", "1.5"}).drain_delay, 1500ms);
  EXPECT_THROW((void)parse_server_args({"--drain-delay", "-1"}), cli::UsageError);
  EXPECT_THROW((void)parse_server_args({"--udp", "--drain-delay", "1"}), cli::UsageError);
}

TEST(ServerArgs, MetricsTakesHostAndPort) {
  EXPECT_FALSE(parse_server_args({}).metrics.has_value());
  const ServerSettings v4 = parse_server_args({"--metrics", "127.0.0.1:9100"});
  ASSERT_TRUE(v4.metrics.has_value());
  EXPECT_EQ(v4.metrics->host, "127.0.0.1");
  EXPECT_EQ(v4.metrics->port, 9100);
  const ServerSettings v6 = parse_server_args({"--metrics=[::1]:0"});
  ASSERT_TRUE(v6.metrics.has_value());
  EXPECT_EQ(v6.metrics->host, "::1");
  EXPECT_EQ(v6.metrics->port, 0);
  EXPECT_EQ(parse_server_args({"--metrics", "localhost:1"}).metrics->host, "localhost");
  for (const std::string_view bad :
       {"", "9100", ":9100", "[]:1", "[::1]", "::1:9100", "a:", "a:-1"}) {
    EXPECT_THROW((void)parse_server_args({"--metrics", bad}), cli::UsageError) << bad;
  }
}

// A background server's command line, `more` before --exec (every word after it is the
// program's).
ServerSettings background_args(Args more) {
  Args args = {"--background"};
  args.insert(args.end(), more.begin(), more.end());
  args.insert(args.end(), {"--exec", "true"});
  return parse_server_args(args);
}

std::string background_error(Args more) {
  Args args = {"--background"};
  args.insert(args.end(), more.begin(), more.end());
  args.insert(args.end(), {"--exec", "true"});
  return server_error(args);
}

TEST(ServerArgs, JobFlagsDefaultToTheLibrarysValues) {
  const ServerSettings s = background_args({});
  EXPECT_FALSE(s.status.has_value());
  EXPECT_EQ(s.retry_delay, 10s);
  EXPECT_EQ(s.max_attempts, 5U);
  EXPECT_EQ(s.keep, 1h);
  EXPECT_EQ(s.keep_max, 10000U);
}

TEST(ServerArgs, StatusTakesHostAndPortOrAUnixPath) {
  const ServerSettings v4 = background_args({"--status", "127.0.0.1:12388"});
  ASSERT_TRUE(v4.status.has_value());
  EXPECT_EQ(v4.status->host, "127.0.0.1");
  EXPECT_EQ(v4.status->port, 12388);
  EXPECT_EQ(v4.status->unix_path, "");
  const ServerSettings v6 = background_args({"--status=[::1]:0"});
  ASSERT_TRUE(v6.status.has_value());
  EXPECT_EQ(v6.status->host, "::1");
  EXPECT_EQ(v6.status->port, 0);
  const ServerSettings file = background_args({"--status", "unix:/run/sockecho/status.sock"});
  ASSERT_TRUE(file.status.has_value());
  EXPECT_EQ(file.status->unix_path, "/run/sockecho/status.sock");
  EXPECT_EQ(file.status->host, "");
  EXPECT_EQ(background_args({"--status", "unix:@status"}).status->unix_path, "@status");
  for (const std::string_view bad :
       {"", "12388", ":1", "[::1]", "::1:1", "a:", "a:65536", "unix:", "unix:@", "unix"}) {
    EXPECT_TRUE(contains(background_error({"--status", bad}), "--status")) << bad;
  }
  EXPECT_TRUE(contains(background_error({"--status", "x"}), "HOST:PORT or unix:PATH"));
  EXPECT_TRUE(contains(background_error({"--status", "unix:" + std::string(108, 'a')}),
                       "--status: Unix socket path"));
}

TEST(ServerArgs, RetryDelayIsSecondsFromZeroToAnHour) {
  EXPECT_EQ(background_args({"--retry-delay", "2.5"}).retry_delay, 2500ms);
  EXPECT_EQ(background_args({"--retry-delay", "0"}).retry_delay, 0ms);  // at once
  EXPECT_EQ(background_args({"--retry-delay", "3600"}).retry_delay, 1h);
  EXPECT_EQ(background_error({"--retry-delay", "3600.001"}),
            "--retry-delay: '3600.001' is not a number of seconds from 0 to 3600");
  for (const std::string_view bad : {"", "-1", "1.2345", "ten"}) {
    EXPECT_TRUE(contains(background_error({"--retry-delay", bad}), "--retry-delay")) << bad;
  }
}

TEST(ServerArgs, MaxAttemptsIsAtLeastOne) {
  EXPECT_EQ(background_args({"--max-attempts", "1"}).max_attempts, 1U);
  EXPECT_EQ(background_args({"--max-attempts", "1000"}).max_attempts, 1000U);
  EXPECT_EQ(background_error({"--max-attempts", "0"}),
            "--max-attempts: '0' is not a whole number from 1 to 1000");
  EXPECT_TRUE(contains(background_error({"--max-attempts", "1001"}), "--max-attempts"));
}

TEST(ServerArgs, KeepIsMoreThanNothing) {
  EXPECT_EQ(background_args({"--keep", "0.001"}).keep, 1ms);
  EXPECT_EQ(background_args({"--keep", "86400"}).keep, 24h);
  EXPECT_EQ(background_error({"--keep", "0"}),
            "--keep: '0' is not a number of seconds above 0 (e.g. 3600)");
  EXPECT_TRUE(contains(background_error({"--keep", "0.000"}), "above 0"));
  EXPECT_TRUE(contains(background_error({"--keep", "-1"}), "--keep"));
  EXPECT_EQ(background_args({"--keep-max", "1"}).keep_max, 1U);
  EXPECT_EQ(background_error({"--keep-max", "0"}),
            "--keep-max: '0' is not a whole number from 1 to 10000000");
}

TEST(ServerArgs, JobFlagsNeedBackground) {
  for (const std::string_view flag :
       {"--status", "--retry-delay", "--max-attempts", "--keep", "--keep-max"}) {
    const std::string value = flag == "--status" ? "127.0.0.1:0" : "1";
    EXPECT_EQ(server_error({flag, value, "--exec", "true"}),
              std::string(flag) + " needs --background");
    EXPECT_EQ(server_error({flag, value}), std::string(flag) + " needs --background");
  }
  EXPECT_EQ(server_error({"--spool", "/tmp/x", "--exec", "true"}), "--spool needs --background");
}

TEST(ServerArgs, UnixModeAndGroupApplyToTheStatusSocketToo) {
  const ServerSettings s = background_args(
      {"--status", "unix:/run/x.sock", "--unix-mode", "0600", "--unix-group", "www-data"});
  EXPECT_EQ(s.unix_mode, mode_t{0600});
  EXPECT_EQ(s.unix_group, "www-data");
  EXPECT_EQ(s.unix_path, "");
  // One file among the sockets is enough: the modes apply to it, the abstract one has none.
  EXPECT_EQ(
      background_args({"--unix", "@jobs", "--status", "unix:/run/x.sock", "--unix-mode", "0600"})
          .unix_mode,
      mode_t{0600});
  EXPECT_EQ(background_args({"--unix", "/run/j.sock", "--status", "unix:@x", "--unix-mode", "0600"})
                .unix_mode,
            mode_t{0600});
  EXPECT_EQ(background_error({"--status", "127.0.0.1:0", "--unix-mode", "0600"}),
            "--unix-mode and --unix-group need --unix or --status unix:PATH");
  EXPECT_EQ(background_error({"--status", "unix:@x", "--unix-group", "www-data"}),
            "an abstract socket (--status unix:@NAME) has no file: no --unix-mode or --unix-group");
  EXPECT_EQ(background_error({"--unix", "@a", "--status", "unix:@b", "--unix-mode", "0600"}),
            "an abstract socket (--unix @NAME) has no file: no --unix-mode or --unix-group");
}

TEST(ServerArgs, AcceptsTheEqualsForm) {
  const ServerSettings s = parse_server_args(
      {"--host=0.0.0.0", "--port=65535", "--prefix=a=b", "--workers=4096", "--max-bytes=2M"});
  EXPECT_EQ(s.host, "0.0.0.0");
  EXPECT_EQ(s.port, 65535);
  EXPECT_EQ(s.prefix, "a=b");  // only the first '=' separates
  EXPECT_EQ(s.options.workers, 4096U);
  EXPECT_EQ(s.limits.max_bytes, std::size_t{2} << 20);
}

TEST(ServerArgs, EmptyPrefixIsAllowed) {
  EXPECT_EQ(parse_server_args({"--prefix", ""}).prefix, "");
  EXPECT_EQ(parse_server_args({"--prefix="}).prefix, "");
}

TEST(ServerArgs, ZeroMeansNoLimit) {
  const ServerSettings s =
      parse_server_args({"--timeout", "0", "--max-bytes", "0", "--max-total-bytes", "0"});
  EXPECT_EQ(s.options.timeout, 0ms);
  EXPECT_EQ(s.limits.max_bytes, 0U);
  EXPECT_EQ(s.limits.max_total_bytes, 0U);
}

TEST(ServerArgs, LaterFlagsWin) {
  EXPECT_EQ(parse_server_args({"--port", "1", "--port", "2"}).port, 2);
}

TEST(ServerArgs, HelpVersionAndQuiet) {
  EXPECT_TRUE(parse_server_args({"--help"}).help);
  EXPECT_TRUE(parse_server_args({"-h"}).help);
  EXPECT_TRUE(parse_server_args({"--version"}).version);
  EXPECT_EQ(parse_server_args({"--quiet"}).log_level, LogLevel::quiet);
}

TEST(ServerArgs, RejectsBadValues) {
  EXPECT_TRUE(contains(server_error({"--port", "65536"}), "--port"));
  EXPECT_TRUE(contains(server_error({"--port", "-1"}), "--port"));
  EXPECT_TRUE(contains(server_error({"--port", ""}), "--port"));
  EXPECT_TRUE(contains(server_error({"--port", " 80"}), "--port"));
  EXPECT_TRUE(contains(server_error({"--workers", "0"}), "--workers"));
  EXPECT_TRUE(contains(server_error({"--workers", "4097"}), "--workers"));
  EXPECT_TRUE(contains(server_error({"--backlog", "0"}), "--backlog"));
  EXPECT_TRUE(contains(server_error({"--timeout", "-1"}), "--timeout"));
  EXPECT_TRUE(contains(server_error({"--max-bytes", "1T"}), "--max-bytes"));
  EXPECT_TRUE(contains(server_error({"--mode", "chat"}), "--mode"));
  EXPECT_TRUE(contains(server_error({"--host", ""}), "--host"));
}

TEST(ServerArgs, RejectsMalformedCommandLines) {
  EXPECT_TRUE(contains(server_error({"--bogus"}), "unknown option '--bogus'"));
  EXPECT_TRUE(contains(server_error({"--port"}), "--port needs a value"));
  EXPECT_TRUE(contains(server_error({"--quiet=1"}), "--quiet takes no value"));
  EXPECT_TRUE(contains(server_error({"stray"}), "'stray'"));
  EXPECT_TRUE(contains(server_error({"-p", "1"}), "'-p'"));
  EXPECT_FALSE(server_error({"--"}).empty());
}

TEST(ServerArgs, UnixSocketFlags) {
  const ServerSettings plain = parse_server_args({});
  EXPECT_EQ(plain.unix_path, "");
  EXPECT_FALSE(plain.unix_mode);
  EXPECT_FALSE(plain.unix_group);
  const ServerSettings s = parse_server_args(
      {"--unix", "/run/sockecho/sockecho.sock", "--unix-mode", "0660", "--unix-group", "www-data"});
  EXPECT_EQ(s.unix_path, "/run/sockecho/sockecho.sock");
  EXPECT_EQ(s.unix_mode, mode_t{0660});
  EXPECT_EQ(s.unix_group, "www-data");
  EXPECT_EQ(parse_server_args({"--unix=@name"}).unix_path, "@name");
  EXPECT_EQ(parse_server_args({"--unix", "x", "--unix-mode", "7"}).unix_mode, mode_t{07});
  EXPECT_EQ(parse_server_args({"--unix", "x", "--unix-mode", "0777"}).unix_mode, mode_t{0777});
  EXPECT_EQ(parse_server_args({"--unix", "x", "--unix-mode", "0"}).unix_mode, mode_t{0});
}

TEST(ServerArgs, RejectsUnixSocketMisuse) {
  EXPECT_TRUE(contains(server_error({"--unix", "x", "--port", "1"}), "--host or --port"));
  EXPECT_TRUE(contains(server_error({"--host", "::1", "--unix", "x"}), "--host or --port"));
  EXPECT_TRUE(contains(server_error({"--unix", "x", "--reuseport"}), "--reuseport"));
  EXPECT_TRUE(contains(server_error({"--unix", ""}), "--unix: Unix socket path is empty"));
  EXPECT_TRUE(contains(server_error({"--unix", std::string(108, 'a')}), "at most 107"));
  for (const std::string_view mode : {"", "8", "0o660", "-1", "1000", "0x1ff", " 660", "01777",
                                      "00000000000000000000000660000000"}) {
    EXPECT_TRUE(contains(server_error({"--unix", "x", "--unix-mode", mode}), "--unix-mode"))
        << mode;
  }
  EXPECT_TRUE(contains(server_error({"--unix-mode", "0600"}), "need --unix"));
  EXPECT_TRUE(contains(server_error({"--unix-group", "www-data"}), "need --unix"));
  EXPECT_TRUE(contains(server_error({"--unix", "x", "--unix-group", ""}), "--unix-group"));
  EXPECT_TRUE(contains(server_error({"--unix", "@x", "--unix-mode", "0600"}), "abstract"));
}

TEST(ServerArgs, QuietAndVerboseAreExclusive) {
  EXPECT_EQ(parse_server_args({"--verbose"}).log_level, LogLevel::verbose);
  EXPECT_EQ(server_error({"--quiet", "--verbose"}), "--quiet and --verbose cannot be combined");
  EXPECT_EQ(server_error({"--verbose", "--port", "0", "--quiet"}),
            "--quiet and --verbose cannot be combined");
}

TEST(ServerArgs, GreetingIsForLineModeOnly) {
  EXPECT_EQ(parse_server_args({"--greeting", "hi", "--mode", "line"}).greeting, "hi");
  EXPECT_EQ(parse_server_args({"--mode", "line", "--greeting", ""}).greeting, "");
  EXPECT_EQ(server_error({"--greeting", "hi"}), "--greeting needs --mode line");
  EXPECT_EQ(server_error({"--mode", "line", "--greeting", "hi", "--mode", "echo"}),
            "--greeting needs --mode line");
}

// --- sockecho-client ---

TEST(ClientArgs, UnixSocket) {
  EXPECT_EQ(parse_client_args({}).unix_path, "");
  EXPECT_EQ(parse_client_args({"--unix", "/run/x.sock"}).unix_path, "/run/x.sock");
  EXPECT_TRUE(contains(client_error({"--unix", "x", "--port", "1"}), "--host or --port"));
  EXPECT_TRUE(contains(client_error({"--host", "h", "--unix", "x"}), "--host or --port"));
  EXPECT_TRUE(contains(client_error({"--unix", ""}), "--unix"));
}

TEST(ClientArgs, DefaultsMatchTheContract) {
  const ClientSettings s = parse_client_args({});
  EXPECT_EQ(s.host, "127.0.0.1");
  EXPECT_EQ(s.port, kDefaultPort);
  EXPECT_FALSE(s.send.has_value());
  EXPECT_FALSE(s.file.has_value());
  EXPECT_EQ(s.timeout, kDefaultClientTimeout);
  EXPECT_GT(s.timeout, 0ms);
  EXPECT_EQ(s.mode, cli::Mode::echo);
  EXPECT_FALSE(s.quiet);
  EXPECT_FALSE(s.help);
  EXPECT_FALSE(s.version);
}

TEST(ClientArgs, ReadsEveryFlag) {
  const ClientSettings s = parse_client_args({"--host", "localhost", "--port", "1", "--send",
                                              "--not-a-flag", "--timeout", "0.25", "--quiet"});
  EXPECT_EQ(s.host, "localhost");
  EXPECT_EQ(s.port, 1);
  EXPECT_EQ(s.send, std::optional<std::string>("--not-a-flag"));  // a value, taken as it is
  EXPECT_EQ(s.timeout, 250ms);
  EXPECT_TRUE(s.quiet);
}

TEST(ClientArgs, SendKeepsTheBytesAsGiven) {
  EXPECT_EQ(parse_client_args({"--send", "a\\nb"}).send, std::optional<std::string>("a\\nb"));
  EXPECT_EQ(parse_client_args({"--send", ""}).send, std::optional<std::string>(""));
  EXPECT_EQ(parse_client_args({"--send=x=y"}).send, std::optional<std::string>("x=y"));
}

TEST(ClientArgs, FileAndLineMode) {
  EXPECT_EQ(parse_client_args({"--file", "-"}).file, std::optional<std::string>("-"));
  EXPECT_EQ(parse_client_args({"--file=/tmp/x"}).file, std::optional<std::string>("/tmp/x"));
  const ClientSettings line = parse_client_args({"--mode", "line"});
  EXPECT_EQ(line.mode, cli::Mode::line);
  EXPECT_FALSE(line.file.has_value());
}

TEST(ClientArgs, PortZeroIsAUsageError) {
  EXPECT_EQ(client_error({"--port", "0"}), "--port: a client cannot connect to port 0");
  EXPECT_EQ(client_error({"--port=0", "--udp"}), "--port: a client cannot connect to port 0");
  EXPECT_EQ(parse_client_args({"--port", "0", "--port", "1"}).port, 1);
}

TEST(ClientArgs, RejectsConflictsAndBadValues) {
  EXPECT_TRUE(contains(client_error({"--send", "x", "--file", "-"}), "--send"));
  EXPECT_TRUE(contains(client_error({"--file", "-", "--send", "x"}), "--file"));
  EXPECT_TRUE(contains(client_error({"--send", "x", "--mode", "line"}), "--send"));
  EXPECT_TRUE(contains(client_error({"--file", ""}), "--file"));
  EXPECT_TRUE(contains(client_error({"--port", "abc"}), "--port"));
  EXPECT_TRUE(contains(client_error({"--port", "1.5"}), "--port"));
  EXPECT_TRUE(contains(client_error({"--timeout", "soon"}), "--timeout"));
  EXPECT_TRUE(contains(client_error({"--send"}), "--send needs a value"));
  EXPECT_TRUE(contains(client_error({"--workers", "2"}), "unknown option '--workers'"));
  EXPECT_TRUE(contains(client_error({"--quiet=no"}), "--quiet"));
}

// --- value parsers ---

TEST(ParseSeconds, AcceptsWholeAndDecimalSeconds) {
  EXPECT_EQ(parse_seconds("--timeout", "0"), 0ms);
  EXPECT_EQ(parse_seconds("--timeout", "30"), 30s);
  EXPECT_EQ(parse_seconds("--timeout", "0.5"), 500ms);
  EXPECT_EQ(parse_seconds("--timeout", "1.25"), 1250ms);
  EXPECT_EQ(parse_seconds("--timeout", "0.001"), 1ms);
  EXPECT_EQ(parse_seconds("--timeout", "007"), 7s);
  EXPECT_EQ(parse_seconds("--timeout", "1000000"), 1000000s);
}

TEST(ParseSeconds, RejectsEverythingElse) {
  for (const std::string_view text :
       {"", ".5", "1.", "1.2345", "-1", "+1", "abc", "1e3", " 1", "1 ", "1s", "1,5", "1000001",
        "0.0.1", "99999999999999999999999"}) {
    SCOPED_TRACE(text);
    try {
      (void)parse_seconds("--timeout", text);
      ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
      EXPECT_TRUE(contains(e.what(), "--timeout")) << e.what();
    }
  }
}

TEST(ParseSeconds, SaysDecimalsAreLimitedToThree) {
  for (const std::string_view text : {"0.0001", "1.2345", "abc"}) {
    SCOPED_TRACE(text);
    try {
      (void)parse_seconds("--timeout", text);
      ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
      EXPECT_EQ(std::string(e.what()), "--timeout: '" + std::string(text) +
                                           "' is not a number of seconds, at most three "
                                           "decimals (e.g. 30 or 0.5)");
    }
  }
}

TEST(ParseSize, AcceptsBinarySuffixes) {
  EXPECT_EQ(parse_size("--max-bytes", "0"), 0U);
  EXPECT_EQ(parse_size("--max-bytes", "65536"), 65536U);
  EXPECT_EQ(parse_size("--max-bytes", "64K"), std::size_t{64} << 10);
  EXPECT_EQ(parse_size("--max-bytes", "64k"), std::size_t{64} << 10);
  EXPECT_EQ(parse_size("--max-bytes", "64M"), std::size_t{64} << 20);
  EXPECT_EQ(parse_size("--max-bytes", "64m"), std::size_t{64} << 20);
  EXPECT_EQ(parse_size("--max-bytes", "1G"), std::size_t{1} << 30);
  EXPECT_EQ(parse_size("--max-bytes", "3g"), std::size_t{3} << 30);
  EXPECT_EQ(parse_size("--max-bytes", "0K"), 0U);
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  EXPECT_EQ(parse_size("--max-bytes", std::to_string(max)), max);
  EXPECT_EQ(parse_size("--max-bytes", std::to_string(max >> 30) + "G"), (max >> 30) << 30);
}

TEST(ParseSize, RejectsEverythingElse) {
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  for (const std::string& text :
       {std::string(""), std::string("K"), std::string("1T"), std::string("-1"),
        std::string("1.5M"), std::string("1KB"), std::string(" 1"), std::string("1 K"),
        std::string("0x10"), std::to_string(max) + "0", std::to_string((max >> 10) + 1) + "K",
        std::to_string((max >> 30) + 1) + "G"}) {
    SCOPED_TRACE(text);
    try {
      (void)parse_size("--max-bytes", text);
      ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
      EXPECT_TRUE(contains(e.what(), "--max-bytes")) << e.what();
    }
  }
}

TEST(ParseNumber, AcceptsTheRangeInclusive) {
  EXPECT_EQ(parse_number("--n", "1", 1, 4096), 1UL);
  EXPECT_EQ(parse_number("--n", "4096", 1, 4096), 4096UL);
  EXPECT_EQ(parse_number("--n", "0042", 1, 4096), 42UL);
  const unsigned long max = std::numeric_limits<unsigned long>::max();
  EXPECT_EQ(parse_number("--n", std::to_string(max), 0, max), max);
}

TEST(ParseNumber, RejectsOutOfRangeAndNonDigits) {
  const unsigned long max = std::numeric_limits<unsigned long>::max();
  EXPECT_THROW((void)parse_number("--n", "0", 1, 4096), UsageError);
  EXPECT_THROW((void)parse_number("--n", "4097", 1, 4096), UsageError);
  EXPECT_THROW((void)parse_number("--n", "10", 0, 9), UsageError);
  EXPECT_THROW((void)parse_number("--n", "", 0, 10), UsageError);
  EXPECT_THROW((void)parse_number("--n", "-1", 0, 10), UsageError);
  EXPECT_THROW((void)parse_number("--n", "+1", 0, 10), UsageError);
  EXPECT_THROW((void)parse_number("--n", "1 ", 0, 10), UsageError);
  EXPECT_THROW((void)parse_number("--n", std::to_string(max) + "0", 0, max), UsageError);
  try {
    (void)parse_number("--workers", "x", 1, 4096);
    ADD_FAILURE() << "accepted";
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "--workers: 'x' is not a whole number from 1 to 4096");
  }
}

// Without the digit > max test in front of it (tools/options.cpp), parse_number's overflow guard
// `value > (max - digit) / 10` would wrap around for a digit above max, and a single digit above a
// max below 9 would pass.
TEST(ParseNumber, RejectsADigitAboveASmallMax) {
  EXPECT_THROW((void)parse_number("--n", "7", 0, 5), UsageError);
  EXPECT_THROW((void)parse_number("--n", "2", 0, 1), UsageError);
}

// --- ArgReader, the reader every program's parser uses ---

// The flags and values `reader` yields, "flag=value" or "flag", in order; "!" and the message
// when it throws.
std::vector<std::string> read_all(const Args& args, std::vector<std::string_view> short_flags,
                                  const std::vector<std::string_view>& with_values) {
  std::vector<std::string> out;
  ArgReader reader(args, std::move(short_flags));
  try {
    while (reader.next()) {
      const std::string flag(reader.flag());
      bool takes_value = false;
      for (const std::string_view f : with_values) takes_value = takes_value || f == flag;
      if (takes_value) {
        out.push_back(flag + "=" + std::string(reader.value()));
      } else {
        reader.no_value();
        out.push_back(flag);
      }
    }
  } catch (const UsageError& e) {
    out.push_back(std::string("!") + e.what());
  }
  return out;
}

TEST(ArgReader, ReadsLongFlagsInBothFormsAndHAsHelp) {
  using V = std::vector<std::string>;
  EXPECT_EQ(read_all({"--port", "80", "--host=::1", "-h", "--json"}, {}, {"--port", "--host"}),
            (V{"--port=80", "--host=::1", "--help", "--json"}));
  EXPECT_EQ(read_all({"--prefix="}, {}, {"--prefix"}), (V{"--prefix="}));
  EXPECT_EQ(read_all({"--prefix", "--json"}, {}, {"--prefix"}), (V{"--prefix=--json"}));
}

TEST(ArgReader, TakesOnlyTheShortFlagsItIsGivenWithTheirValueApart) {
  using V = std::vector<std::string>;
  EXPECT_EQ(read_all({"-c", "4", "--concurrency=5"}, {"-c"}, {"-c", "--concurrency"}),
            (V{"-c=4", "--concurrency=5"}));
  EXPECT_EQ(read_all({"-c", "4"}, {}, {"-c"}), (V{"!unexpected argument '-c'"}));
  EXPECT_EQ(read_all({"-c=4"}, {"-c"}, {"-c"}), (V{"!unexpected argument '-c=4'"}));
  EXPECT_EQ(read_all({"-c4"}, {"-c"}, {"-c"}), (V{"!unexpected argument '-c4'"}));
}

TEST(ArgReader, SaysWhatIsWrong) {
  using V = std::vector<std::string>;
  EXPECT_EQ(read_all({"-c"}, {"-c"}, {"-c"}), (V{"!option -c needs a value"}));
  EXPECT_EQ(read_all({"--port"}, {}, {"--port"}), (V{"!option --port needs a value"}));
  EXPECT_EQ(read_all({"--json=yes"}, {}, {}), (V{"!option --json takes no value"}));
  EXPECT_EQ(read_all({"extra"}, {}, {}), (V{"!unexpected argument 'extra'"}));
  EXPECT_EQ(read_all({"--"}, {}, {}), (V{"!unexpected argument '--'"}));
  const Args args = {"--frobnicate=1"};
  ArgReader reader(args);
  ASSERT_TRUE(reader.next());
  EXPECT_EQ(reader.flag(), "--frobnicate");
  try {
    reader.unknown();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "unknown option '--frobnicate'");
  }
  EXPECT_FALSE(reader.next());
}

TEST(ValueParsers, HostPortAndTheBadValueMessage) {
  EXPECT_EQ(parse_host("::1"), "::1");
  EXPECT_THROW((void)parse_host(""), UsageError);
  EXPECT_EQ(parse_port_flag("0"), 0);
  EXPECT_EQ(parse_port_flag("65535"), 65535);
  EXPECT_THROW((void)parse_port_flag("65536"), UsageError);
  EXPECT_THROW((void)parse_port_flag("x"), UsageError);
  EXPECT_EQ(bad_value("--size", "lots", "a byte count"), "--size: 'lots' is not a byte count");
}

// --- UDP (--udp, --udp-rate) ---

TEST(UdpArgs, ServerReadsUdpAndItsRate) {
  const ServerSettings off = parse_server_args({});
  EXPECT_FALSE(off.udp);
  EXPECT_FALSE(off.udp_rate);
  const ServerSettings s = parse_server_args({"--udp", "--udp-rate", "50", "--prefix", ""});
  EXPECT_TRUE(s.udp);
  EXPECT_EQ(s.udp_rate, 50U);
  EXPECT_EQ(parse_server_args({"--udp", "--udp-rate=0"}).udp_rate, 0U);
  EXPECT_TRUE(parse_client_args({"--udp", "--send", "x"}).udp);
}

TEST(UdpArgs, RejectsLineModeExecAndARateWithoutUdp) {
  EXPECT_TRUE(contains(server_error({"--udp", "--mode", "line"}), "--udp is for echo mode"));
  EXPECT_TRUE(contains(server_error({"--udp", "--exec", "cat"}), "--udp cannot be combined"));
  EXPECT_TRUE(contains(server_error({"--udp-rate", "5"}), "--udp-rate needs --udp"));
  EXPECT_TRUE(contains(server_error({"--udp-rate-bytes", "1M"}), "--udp-rate-bytes needs --udp"));
  EXPECT_EQ(parse_server_args({"--udp", "--udp-rate-bytes", "64K"}).udp_rate_bytes, 65536U);
  EXPECT_EQ(parse_server_args({"--udp", "--udp-rate-bytes=0"}).udp_rate_bytes, 0U);
  EXPECT_FALSE(parse_server_args({"--udp"}).udp_rate_bytes);
  EXPECT_TRUE(contains(server_error({"--udp", "--udp-rate", "x"}), "--udp-rate: 'x'"));
  EXPECT_TRUE(contains(server_error({"--udp=yes"}), "takes no value"));
  EXPECT_TRUE(contains(client_error({"--udp", "--mode", "line"}), "--udp is for echo mode"));
}

}  // namespace
}  // namespace sockecho::cli
