// sockecho-bench: a load generator for the echo protocol. Kept apart from the program's main so
// tests can call the parser and the report formatting directly.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "options.hpp"

namespace sockecho::bench {

inline constexpr unsigned kDefaultSources = 8;
inline constexpr std::size_t kMaxReplyWords = 16;

struct BenchSettings {
  std::string host{cli::kDefaultHost};
  std::uint16_t port = cli::kDefaultPort;
  // --unix PATH: the server's Unix-domain socket (or "@name"), instead of host and port.
  std::string unix_path;
  // Threads, each with one request in flight at a time.
  unsigned concurrency = 1;
  // Stop after this many requests in all; 0 when a duration is given instead.
  std::uint64_t requests = 0;
  // Stop starting requests after this long (requests in flight then finish).
  std::chrono::milliseconds duration{0};
  // Bytes in each request (a fixed pseudo-random pattern).
  std::size_t size = 6;
  // The prefix every reply must start with, before the request's bytes.
  std::string prefix{kServerDefaultPrefix};
  // Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, ...) when the
  // server is on IPv4 loopback; 0 lets the kernel choose the source as usual.
  unsigned sources = kDefaultSources;
  // Limit on connecting and on each read and write; 0 = none.
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  // Any non-empty reply counts as answered, not only PREFIX + request; replies are counted by
  // their first word ("accepted", "busy"). For servers that do not echo, such as --background.
  bool any_reply = false;
  // Print one JSON object on stdout instead of the human-readable report.
  bool json = false;
  // No progress line, even on a terminal.
  bool quiet = false;
  bool help = false;
  bool version = false;
};

// Parses the arguments after the program name. Throws cli::UsageError.
[[nodiscard]] BenchSettings parse_bench_args(const std::vector<std::string_view>& args);
[[nodiscard]] std::string bench_usage();

// Latencies in nanoseconds, in log-linear buckets (about 1.6% wide): fixed memory, no
// allocation while recording, and histograms of several threads add up exactly.
class Histogram {
 public:
  void record(std::uint64_t ns) noexcept;
  void merge(const Histogram& other) noexcept;
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  // The value at quantile q (0..1): an upper bound of the bucket holding it, never above max().
  [[nodiscard]] std::uint64_t quantile(double q) const noexcept;

 private:
  static constexpr unsigned kSubBits = 6;  // 64 buckets per power of two
  static constexpr unsigned kBuckets = (64 - kSubBits + 1) << kSubBits;
  static std::size_t bucket_of(std::uint64_t ns) noexcept;
  static std::uint64_t upper_bound_of(std::size_t bucket) noexcept;

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

// What went wrong with the requests that failed, by kind.
enum class ErrorKind { connect, write, read, timeout, mismatch };
inline constexpr std::size_t kErrorKinds = 5;
[[nodiscard]] std::string_view to_string(ErrorKind kind) noexcept;

struct BenchResult {
  std::uint64_t ok = 0;
  std::array<std::uint64_t, kErrorKinds> errors{};
  std::string first_error;  // the message of the first failure, if any
  std::chrono::nanoseconds elapsed{0};
  std::uint64_t bytes_sent = 0;      // request bytes, all requests
  std::uint64_t bytes_received = 0;  // reply bytes, all requests
  Histogram latency;                 // of requests answered correctly
  // With any_reply: how many replies began with each first word (at most kMaxReplyWords of
  // them; the rest are counted under "other").
  std::map<std::string, std::uint64_t> replies;

  [[nodiscard]] std::uint64_t error_count() const noexcept;
  [[nodiscard]] double seconds() const noexcept;
  [[nodiscard]] double requests_per_second() const noexcept;
  // Request payload bytes of correct replies per second, in MB (10^6 bytes): how fast the
  // server moves data through (each byte crosses the connection twice).
  [[nodiscard]] double megabytes_per_second(std::size_t size) const noexcept;
};

// Runs the load described by settings against the server and returns what happened. Every reply
// is compared byte for byte with prefix + request. With progress_fd >= 0, a progress line is
// rewritten there a few times a second. Throws std::system_error when the host does not resolve.
// With a unix_path, every connection goes to that socket and host, port and sources are unused.
[[nodiscard]] BenchResult run_bench(const BenchSettings& settings, int progress_fd = -1);

// The report: human-readable lines, or one JSON object.
[[nodiscard]] std::string format_report(const BenchSettings& settings, const BenchResult& result);
[[nodiscard]] std::string format_json(const BenchSettings& settings, const BenchResult& result);

}  // namespace sockecho::bench
