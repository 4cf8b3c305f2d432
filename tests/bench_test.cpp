// sockecho-bench: its parser and histogram, and the real program against a real server.
#include "bench.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/address.hpp"
#include "sockecho/listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using bench::BenchSettings;
using bench::Histogram;
using bench::parse_bench_args;
using test::ServerProcess;

std::string bench_program() { return SOCKECHO_BENCH_PROGRAM; }

test::RunResult run_bench(std::uint16_t port, std::vector<std::string> args) {
  args.insert(args.begin(), {bench_program(), "--port", std::to_string(port), "--timeout", "20"});
  return test::run(args);
}

test::RunResult run_bench_unix(const std::string& path, std::vector<std::string> args) {
  args.insert(args.begin(), {bench_program(), "--unix", path, "--timeout", "20"});
  return test::run(args);
}

// The number after "key": in the program's JSON line.
long long json_number(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const std::size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::stoll(json.substr(at + needle.size()));
}

TEST(BenchArgs, Defaults) {
  const BenchSettings s = parse_bench_args({});
  EXPECT_EQ(s.host, "127.0.0.1");
  EXPECT_EQ(s.port, cli::kDefaultPort);
  EXPECT_EQ(s.concurrency, 1U);
  EXPECT_EQ(s.requests, 1000U);
  EXPECT_EQ(s.duration.count(), 0);
  EXPECT_EQ(s.size, 6U);
  EXPECT_EQ(s.prefix, kServerDefaultPrefix);
}

TEST(BenchArgs, ParsesEveryOption) {
  const BenchSettings s =
      parse_bench_args({"--host", "::1", "--port=4000", "-c", "16", "--duration", "2.5", "--size",
                        "16M", "--prefix", "", "--sources", "0", "--timeout", "0", "--json"});
  EXPECT_EQ(s.host, "::1");
  EXPECT_EQ(s.port, 4000);
  EXPECT_EQ(s.concurrency, 16U);
  EXPECT_EQ(s.requests, 0U);
  EXPECT_EQ(s.duration, std::chrono::milliseconds(2500));
  EXPECT_EQ(s.size, std::size_t{16} << 20);
  EXPECT_EQ(s.prefix, "");
  EXPECT_EQ(s.sources, 0U);
  EXPECT_EQ(s.timeout.count(), 0);
  EXPECT_TRUE(s.json);
}

TEST(BenchArgs, RejectsBadCommandLines) {
  const std::vector<std::vector<std::string_view>> bad = {
      {"--requests", "10", "--duration", "1"},
      {"-c", "0"},
      {"--requests", "0"},
      {"--duration", "0"},
      {"--size", "lots"},
      {"--port"},
      {"--json=yes"},
      {"--frobnicate"},
      {"extra"},
      {"--unix", ""},
      {"--unix", "/tmp/x.sock", "--sources", "0"},
  };
  for (const auto& args : bad) {
    EXPECT_THROW((void)parse_bench_args(args), cli::UsageError) << args.front();
  }
}

// The message of the UsageError parse_bench_args throws; "" (and a failure) when none.
std::string bench_error(const std::vector<std::string_view>& args) {
  try {
    (void)parse_bench_args(args);
  } catch (const cli::UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no UsageError";
  return "";
}

TEST(BenchArgs, ConcurrencyLongShortAndEqualsForms) {
  EXPECT_EQ(parse_bench_args({"--concurrency=4"}).concurrency, 4U);
  EXPECT_EQ(parse_bench_args({"--concurrency", "4"}).concurrency, 4U);
  EXPECT_EQ(parse_bench_args({"-c", "4"}).concurrency, 4U);
  EXPECT_EQ(parse_bench_args({"-c", "4", "--concurrency=6"}).concurrency, 6U);
  EXPECT_EQ(parse_bench_args({"--concurrency=6", "-c", "2"}).concurrency, 2U);
  // -c takes its value from the next argument only, as it always has.
  EXPECT_EQ(bench_error({"-c=4"}), "unexpected argument '-c=4'");
  EXPECT_EQ(bench_error({"-c4"}), "unexpected argument '-c4'");
  EXPECT_EQ(bench_error({"-c", "0"}), "-c: '0' is not a whole number from 1 to 1024");
  EXPECT_EQ(bench_error({"--concurrency=1025"}),
            "--concurrency: '1025' is not a whole number from 1 to 1024");
}

TEST(BenchArgs, UnknownFlagsAndMissingValues) {
  EXPECT_EQ(bench_error({"--frobnicate"}), "unknown option '--frobnicate'");
  EXPECT_EQ(bench_error({"--frobnicate=1"}), "unknown option '--frobnicate'");
  EXPECT_EQ(bench_error({"-x"}), "unexpected argument '-x'");
  EXPECT_EQ(bench_error({"-c"}), "option -c needs a value");
  EXPECT_EQ(bench_error({"--concurrency"}), "option --concurrency needs a value");
  EXPECT_EQ(bench_error({"--host"}), "option --host needs a value");
  EXPECT_EQ(bench_error({"--host="}), "--host needs a host name or address");
  EXPECT_EQ(bench_error({"--port", "x"}), "--port: port 'x' is not a number from 0 to 65535");
  EXPECT_EQ(bench_error({"--json=yes"}), "option --json takes no value");
  EXPECT_EQ(bench_error({"--duration", "0"}),
            "--duration: '0' is not a positive number of seconds");
}

TEST(BenchArgs, UnixSocketInsteadOfHostAndPort) {
  EXPECT_EQ(parse_bench_args({}).unix_path, "");
  EXPECT_EQ(parse_bench_args({"--unix", "/run/x.sock"}).unix_path, "/run/x.sock");
  EXPECT_EQ(parse_bench_args({"--unix=@bench", "-c", "4"}).unix_path, "@bench");
  const std::string conflict = "--unix cannot be combined with --host, --port or --sources";
  EXPECT_EQ(bench_error({"--unix", "/run/x.sock", "--host", "::1"}), conflict);
  EXPECT_EQ(bench_error({"--port", "4000", "--unix", "/run/x.sock"}), conflict);
  EXPECT_EQ(bench_error({"--unix", "/run/x.sock", "--sources", "8"}), conflict);
  EXPECT_EQ(bench_error({"--unix"}), "option --unix needs a value");
  EXPECT_EQ(
      bench_error({"--unix", std::string(Address::kMaxUnixPath + 1, 'x')}).rfind("--unix: ", 0),
      0U);
}

TEST(BenchArgs, HelpAndVersion) {
  EXPECT_TRUE(parse_bench_args({"-h"}).help);
  EXPECT_TRUE(parse_bench_args({"--help"}).help);
  EXPECT_TRUE(parse_bench_args({"--version"}).version);
  EXPECT_EQ(bench_error({"-h=1"}), "unexpected argument '-h=1'");
  EXPECT_EQ(bench_error({"--help=1"}), "option --help takes no value");
}

TEST(Histogram, QuantilesAreWithinTheBucketWidth) {
  Histogram h;
  for (std::uint64_t us = 1; us <= 1000; ++us) h.record(us * 1000);
  EXPECT_EQ(h.count(), 1000U);
  EXPECT_EQ(h.max(), 1'000'000U);
  for (const double q : {0.5, 0.9, 0.99}) {
    const auto exact = static_cast<double>(q * 1000 * 1000);
    const auto got = static_cast<double>(h.quantile(q));
    EXPECT_GE(got, exact) << q;
    EXPECT_LE(got, exact * 1.02) << q;
  }
  EXPECT_EQ(h.quantile(1.0), h.max());
}

TEST(Histogram, MergeAddsCountsAndKeepsTheMax) {
  Histogram a;
  Histogram b;
  a.record(10);
  b.record(5'000'000);
  b.record(7);
  a.merge(b);
  EXPECT_EQ(a.count(), 3U);
  EXPECT_EQ(a.max(), 5'000'000U);
  EXPECT_EQ(a.quantile(0.1), 7U);  // values below 64 ns have buckets of their own
}

TEST(BenchProgram, VerifiesEveryReplyOfARealServer) {
  ServerProcess server({"--quiet"});
  const test::RunResult r = run_bench(server.port(), {"--requests", "300", "-c", "4", "--json"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(json_number(r.out, "ok"), 300) << r.out;
  EXPECT_EQ(json_number(r.out, "errors"), 0) << r.out;
  // 300 requests of 6 bytes, each answered with the 10-byte prefix and the 6 bytes.
  EXPECT_EQ(json_number(r.out, "bytes_sent"), 300 * 6) << r.out;
  EXPECT_EQ(json_number(r.out, "bytes_received"), 300 * 16) << r.out;
}

TEST(BenchProgram, VerifiesEveryReplyOverAUnixSocket) {
  const test::ScratchDir dir;
  const std::string path = dir.file("echo.sock");
  ServerProcess server({"--quiet", "--unix", path});
  const test::RunResult r = run_bench_unix(path, {"--requests", "300", "-c", "4", "--json"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(json_number(r.out, "ok"), 300) << r.out;
  EXPECT_EQ(json_number(r.out, "errors"), 0) << r.out;
  EXPECT_EQ(json_number(r.out, "bytes_received"), 300 * 16) << r.out;
  EXPECT_NE(r.out.find("\"unix\":\"" + path + "\""), std::string::npos) << r.out;
  const test::RunResult human = run_bench_unix(path, {"--requests", "5", "-c", "2"});
  EXPECT_EQ(human.status, 0) << human.out << human.err;
  EXPECT_EQ(human.out.rfind("target     unix:" + path + ", 2 concurrent, 6-byte requests\n", 0), 0U)
      << human.out;
}

TEST(BenchProgram, ReportsAUnixSocketThatIsNotThere) {
  const test::ScratchDir dir;
  const std::string path = dir.file("absent.sock");
  const test::RunResult r = run_bench_unix(path, {"--requests", "4"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("errors     connect=4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("connect unix:" + path + ": No such file or directory"), std::string::npos)
      << r.out;
}

TEST(BenchProgram, LargeRequestsAndTheHumanReport) {
  ServerProcess server({"--quiet", "--prefix", ""});
  const test::RunResult r =
      run_bench(server.port(), {"--requests", "6", "-c", "2", "--size", "3M", "--prefix", ""});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("requests   6 ok, 0 errors in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" requests/s, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("latency    p50 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" p99 "), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "") << "no progress line when stderr is not a terminal";
}

TEST(BenchProgram, ReportsRepliesThatDifferFromTheExpectedOnes) {
  ServerProcess server({"--quiet", "--prefix", "other: "});
  const test::RunResult r = run_bench(server.port(), {"--requests", "50", "-c", "2", "--json"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_EQ(json_number(r.out, "ok"), 0) << r.out;
  EXPECT_EQ(json_number(r.out, "errors"), 50) << r.out;
  EXPECT_EQ(json_number(r.out, "errors_mismatch"), 50) << r.out;
  EXPECT_NE(r.out.find("differs from the expected"), std::string::npos) << r.out;
}

TEST(BenchProgram, AnyReplyCountsRepliesByTheirFirstWord) {
  // The echo of other prefixes is not what the bench expects, but --any-reply takes it, counted
  // under the prefix's first word; and --any-reply parses as a switch.
  EXPECT_TRUE(parse_bench_args({"--any-reply"}).any_reply);
  EXPECT_FALSE(parse_bench_args({}).any_reply);
  ServerProcess server({"--quiet", "--prefix", "other: "});
  const test::RunResult r =
      run_bench(server.port(), {"--requests", "40", "-c", "2", "--any-reply", "--json"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(json_number(r.out, "ok"), 40) << r.out;
  EXPECT_NE(r.out.find("\"replies\":{\"other:\":40}"), std::string::npos) << r.out;
  const test::RunResult human =
      run_bench(server.port(), {"--requests", "3", "--any-reply", "--prefix", "x"});
  EXPECT_NE(human.out.find("replies    other:=3\n"), std::string::npos) << human.out;
}

TEST(BenchProgram, AnyReplyStillFailsWhenNothingComesBack) {
  // A server that reads each request to its end and closes without a word: each request fails
  // as "no reply".
  Listener silent = Listener::bind("127.0.0.1", 0);
  std::thread closer([&] {
    for (int i = 0; i < 3; ++i) {
      std::optional<Connection> c = silent.accept();
      if (!c) return;
      c->set_timeout(std::chrono::seconds(20));
      std::array<char, 64> sink{};
      while (c->read_some(sink.data(), sink.size()) > 0) {
      }
    }
  });
  const test::RunResult r = run_bench(silent.address().port(), {"--requests", "3", "--any-reply"});
  closer.join();
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("errors     mismatch=3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no reply from 127.0.0.1:"), std::string::npos) << r.out;
}

TEST(BenchProgram, ReportsAServerThatIsNotThere) {
  std::uint16_t port = 0;
  {
    const Listener closed = Listener::bind("127.0.0.1", 0);
    port = closed.address().port();
  }
  const test::RunResult r = run_bench(port, {"--requests", "5"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("errors     connect=5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Connection refused"), std::string::npos) << r.out;
}

TEST(BenchProgram, UsageErrorsExitTwo) {
  const test::RunResult r = test::run({bench_program(), "--requests", "1", "--duration", "1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("cannot be combined"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sockecho
