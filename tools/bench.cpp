#include "bench.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"

namespace sockecho::bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned long kMaxConcurrency = 1024;
constexpr unsigned long kMaxSources = 250;  // 127.0.0.2 .. 127.0.0.251
// Each read of a reply takes up to this much, checked while it is still in the cache.
constexpr std::size_t kReadChunk = std::size_t{256} * 1024;
constexpr std::chrono::milliseconds kProgressEvery{250};

// The request: a fixed pattern of `size` bytes covering every byte value (xorshift32: no short
// period), so a reply that drops, repeats or changes a byte is caught.
std::string make_payload(std::size_t size) {
  std::string data(size, '\0');
  std::uint32_t state = 2463534242U;
  for (char& c : data) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    c = static_cast<char>(state & 0xff);
  }
  return data;
}

// A reply must be exactly prefix followed by payload; this checks one piece of it that starts
// `offset` bytes into the reply.
class Expected {
 public:
  Expected(std::string_view prefix, std::string_view payload)
      : prefix_(prefix), payload_(payload) {}

  [[nodiscard]] std::size_t size() const noexcept { return prefix_.size() + payload_.size(); }

  [[nodiscard]] bool matches(std::size_t offset, const char* data, std::size_t n) const noexcept {
    if (offset + n > size()) return false;
    if (offset < prefix_.size()) {
      const std::size_t in_prefix = std::min(n, prefix_.size() - offset);
      if (std::memcmp(data, prefix_.data() + offset, in_prefix) != 0) return false;
      data += in_prefix;
      n -= in_prefix;
      offset += in_prefix;
    }
    return n == 0 || std::memcmp(data, payload_.data() + (offset - prefix_.size()), n) == 0;
  }

 private:
  std::string_view prefix_;
  std::string_view payload_;
};

// One failed request: its kind and what to tell the user.
struct Failure {
  ErrorKind kind;
  std::string message;
};

// The shared plan of a run, read by every worker thread.
struct Plan {
  Address server;
  std::vector<Address> sources;  // empty: let the kernel choose
  std::string payload;
  Expected expected;
  std::chrono::milliseconds timeout{0};  // connecting, and the idle limit of each connection
  bool any_reply = false;                // any non-empty reply is an answer
  // Requests still to start (request-count mode), or the time to stop starting them.
  std::atomic<std::int64_t> remaining{0};
  bool by_duration = false;
  Clock::time_point stop_at;

  Plan(const Address& to, std::string request, std::string_view prefix)
      : server(to), payload(std::move(request)), expected(prefix, payload) {}
};

// One load thread: a connection at a time, every buffer reused.
class Worker {
 public:
  Worker(Plan& plan, unsigned index) : plan_(plan), next_source_(index), chunk_(kReadChunk) {}

  void run() {
    for (;;) {
      if (plan_.by_duration) {
        if (Clock::now() >= plan_.stop_at) break;
      } else if (plan_.remaining.fetch_sub(1, std::memory_order_relaxed) <= 0) {
        break;
      }
      one_request();
      done_.store(ok_ + failed_, std::memory_order_relaxed);
    }
  }

  [[nodiscard]] std::uint64_t done() const noexcept {
    return done_.load(std::memory_order_relaxed);
  }

  void add_to(BenchResult& result) const {
    result.ok += ok_;
    for (std::size_t i = 0; i < kErrorKinds; ++i) result.errors[i] += errors_[i];
    if (result.first_error.empty()) result.first_error = first_error_;
    result.bytes_sent += bytes_sent_;
    result.bytes_received += bytes_received_;
    result.latency.merge(latency_);
    for (const auto& [word, n] : replies_) {
      const bool room = result.replies.size() < kMaxReplyWords || result.replies.count(word) > 0;
      result.replies[room ? word : "other"] += n;
    }
  }

 private:
  void one_request() {
    const Clock::time_point start = Clock::now();
    Failure failure{ErrorKind::connect, {}};
    if (exchange(failure)) {
      ++ok_;
      latency_.record(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count()));
      return;
    }
    ++failed_;
    ++errors_[static_cast<std::size_t>(failure.kind)];
    if (first_error_.empty()) first_error_ = failure.message;
  }

  // One connection: connect, send, half-close, read and check the reply. False on failure, with
  // the failure described.
  bool exchange(Failure& failure) {
    ConnectOptions options;
    options.timeout = plan_.timeout;
    if (!plan_.sources.empty())
      options.source = plan_.sources[next_source_++ % plan_.sources.size()];
    ErrorKind during = ErrorKind::connect;
    std::optional<Connection> connection;
    std::size_t received = 0;
    try {
      connection = connect(plan_.server, options);
      connection->set_timeout(plan_.timeout);
      during = ErrorKind::write;
      connection->write_all(plan_.payload);
      connection->close_write();
      during = ErrorKind::read;
      for (;;) {
        const std::size_t n = connection->read_some(chunk_.data(), chunk_.size());
        if (n == 0) break;
        if (plan_.any_reply) {
          if (received == 0) first_word(std::string_view(chunk_.data(), n));
          received += n;
          continue;
        }
        if (!plan_.expected.matches(received, chunk_.data(), n)) {
          failure.kind = ErrorKind::mismatch;
          failure.message = "reply from " + plan_.server.to_string() +
                            " differs from the expected " + std::to_string(plan_.expected.size()) +
                            " bytes at or after byte " + std::to_string(received);
          break;
        }
        received += n;
      }
    } catch (const std::system_error& e) {
      failure.kind = e.code() == std::errc::timed_out ? ErrorKind::timeout : during;
      failure.message = e.what();
    }
    if (connection) {
      bytes_sent_ += connection->bytes_written();
      bytes_received_ += connection->bytes_read();
    }
    if (!failure.message.empty()) return false;
    if (plan_.any_reply) {
      if (received > 0) {
        ++replies_[word_];
        return true;
      }
      failure.kind = ErrorKind::mismatch;
      failure.message = "no reply from " + plan_.server.to_string();
      return false;
    }
    if (received != plan_.expected.size()) {
      failure.kind = ErrorKind::mismatch;
      failure.message = "reply from " + plan_.server.to_string() + " is " +
                        std::to_string(received) + " bytes, expected " +
                        std::to_string(plan_.expected.size());
      return false;
    }
    return true;
  }

  // The reply's first word, up to a space or newline, at most 32 bytes.
  void first_word(std::string_view start) {
    constexpr std::size_t kLongest = 32;
    word_.assign(start.substr(0, std::min(start.find_first_of(" \n"), kLongest)));
  }

  Plan& plan_;
  std::size_t next_source_;
  std::string word_;
  std::map<std::string, std::uint64_t> replies_;
  std::vector<char> chunk_;
  Histogram latency_;
  std::uint64_t ok_ = 0;
  std::uint64_t failed_ = 0;
  std::array<std::uint64_t, kErrorKinds> errors_{};
  std::string first_error_;
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  std::atomic<std::uint64_t> done_{0};
};

bool is_ipv4_loopback(const Address& address) {
  if (address.family() != AF_INET) return false;
  const auto* in = reinterpret_cast<const sockaddr_in*>(address.data());
  return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
}

std::vector<Address> loopback_sources(unsigned count) {
  std::vector<Address> out;
  for (unsigned i = 0; i < count; ++i) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl((127U << 24) + 2 + i);  // 127.0.0.2, 127.0.0.3, ...
    out.emplace_back(reinterpret_cast<const sockaddr*>(&in), static_cast<socklen_t>(sizeof in));
  }
  return out;
}

std::string format_ms(std::uint64_t ns) {
  std::array<char, 32> text{};
  (void)std::snprintf(text.data(), text.size(), "%.3f", static_cast<double>(ns) / 1e6);
  return text.data();
}

std::string format_fixed(double value, int decimals) {
  std::array<char, 48> text{};
  (void)std::snprintf(text.data(), text.size(), "%.*f", decimals, value);
  return text.data();
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      std::array<char, 8> escaped{};
      (void)std::snprintf(escaped.data(), escaped.size(), "\\u%04x", c);
      out += escaped.data();
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

BenchSettings parse_bench_args(const std::vector<std::string_view>& args) {
  BenchSettings s;
  cli::ArgReader reader(args, {"-c"});
  while (reader.next()) {
    const std::string_view flag = reader.flag();
    if (cli::read_common_flag(reader, s)) continue;
    if (flag == "--unix") {
      s.unix_path = cli::parse_unix_path(reader.value());
    } else if (flag == "--concurrency" || flag == "-c") {
      s.concurrency =
          static_cast<unsigned>(cli::parse_number(flag, reader.value(), 1, kMaxConcurrency));
    } else if (flag == "--requests") {
      s.requests = cli::parse_number(flag, reader.value(), 1, 1'000'000'000'000UL);
    } else if (flag == "--duration") {
      s.duration = cli::parse_seconds(flag, reader.value());
      if (s.duration.count() == 0) {
        throw cli::UsageError(cli::bad_value(flag, "0", "a positive number of seconds"));
      }
    } else if (flag == "--size") {
      s.size = cli::parse_size(flag, reader.value());
    } else if (flag == "--prefix") {
      s.prefix = std::string(reader.value());
    } else if (flag == "--sources") {
      s.sources = static_cast<unsigned>(cli::parse_number(flag, reader.value(), 0, kMaxSources));
    } else if (flag == "--timeout") {
      s.timeout = cli::parse_seconds(flag, reader.value());
    } else if (!reader.toggle("--quiet", s.quiet) && !reader.toggle("--any-reply", s.any_reply) &&
               !reader.toggle("--json", s.json)) {
      reader.unknown();
    }
  }
  const bool requests = reader.seen("--requests");
  const bool duration = reader.seen("--duration");
  if (requests && duration) throw cli::UsageError("--requests and --duration cannot be combined");
  if (!requests && !duration) s.requests = 1000;
  if (!s.unix_path.empty() &&
      (reader.seen("--host") || reader.seen("--port") || reader.seen("--sources"))) {
    throw cli::UsageError("--unix cannot be combined with --host, --port or --sources");
  }
  return s;
}

std::string bench_usage() {
  return "Usage: sockecho-bench [OPTION]...\n"
         "Load generator for the sockecho protocol: each request connects, sends SIZE bytes,\n"
         "half-closes and reads the reply, which must be PREFIX followed by the same bytes.\n"
         "\n"
         "  --host HOST        server address or name (default 127.0.0.1)\n"
         "  --port PORT        server port (default 12387)\n"
         "  --unix PATH        connect to the Unix-domain socket at PATH instead (@NAME: an\n"
         "                     abstract one); not with --host, --port or --sources\n"
         "  -c, --concurrency N  threads, each with one request at a time (default 1)\n"
         "  --requests N       requests in all (default 1000)\n"
         "  --duration SEC     start requests for this long instead (e.g. 10 or 2.5)\n"
         "  --size N           request bytes, K/M/G suffixes allowed (default 6)\n"
         "  --prefix TEXT      the reply prefix the server uses (default '数据是 ')\n"
         "  --sources N        spread connections over N source addresses 127.0.0.2... when\n"
         "                     the server is on IPv4 loopback, so TIME_WAIT sockets do not\n"
         "                     exhaust the ephemeral ports; 0 = kernel's choice (default 8)\n"
         "  --timeout SEC      limit on connecting and each read and write; 0 = none\n"
         "                     (default 10)\n"
         "  --any-reply        count any non-empty reply as an answer, by its first word\n"
         "                     (for servers that do not echo, such as --background)\n"
         "  --json             print the results as one JSON object\n"
         "  --quiet            no progress line on stderr\n"
         "  --help             show this help and exit\n"
         "  --version          show the version and exit\n"
         "\n"
         "Reports requests/s, MB/s (request bytes echoed per second, 10^6 bytes), latency\n"
         "p50/p90/p99/max of correct replies, and errors by kind.\n"
         "Exit status: 0 every reply correct, 1 some request failed, 2 usage error.\n";
}

std::size_t Histogram::bucket_of(std::uint64_t ns) noexcept {
  if (ns < (std::uint64_t{1} << kSubBits)) return static_cast<std::size_t>(ns);
  const unsigned top = 63U - static_cast<unsigned>(__builtin_clzll(ns));  // >= kSubBits
  const unsigned shift = top - kSubBits;
  const std::uint64_t sub = (ns >> shift) & ((std::uint64_t{1} << kSubBits) - 1);
  return (static_cast<std::size_t>(shift + 1) << kSubBits) + static_cast<std::size_t>(sub);
}

std::uint64_t Histogram::upper_bound_of(std::size_t bucket) noexcept {
  const std::size_t group = bucket >> kSubBits;
  const std::uint64_t sub = bucket & ((std::size_t{1} << kSubBits) - 1);
  if (group == 0) return sub;
  const unsigned shift = static_cast<unsigned>(group) - 1;
  return (((std::uint64_t{1} << kSubBits) + sub + 1) << shift) - 1;
}

void Histogram::record(std::uint64_t ns) noexcept {
  ++counts_[bucket_of(ns)];
  ++count_;
  max_ = std::max(max_, ns);
}

void Histogram::merge(const Histogram& other) noexcept {
  for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

std::uint64_t Histogram::quantile(double q) const noexcept {
  if (count_ == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  const std::uint64_t wanted = std::max<std::uint64_t>(rank, 1);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= wanted) return std::min(upper_bound_of(i), max_);
  }
  return max_;
}

std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::connect:
      return "connect";
    case ErrorKind::write:
      return "write";
    case ErrorKind::read:
      return "read";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::mismatch:
      return "mismatch";
  }
  return "?";
}

std::uint64_t BenchResult::error_count() const noexcept {
  std::uint64_t total = 0;
  for (const std::uint64_t n : errors) total += n;
  return total;
}

double BenchResult::seconds() const noexcept {
  return std::chrono::duration<double>(elapsed).count();
}

double BenchResult::requests_per_second() const noexcept {
  return seconds() > 0 ? static_cast<double>(ok) / seconds() : 0.0;
}

double BenchResult::megabytes_per_second(std::size_t size) const noexcept {
  return requests_per_second() * static_cast<double>(size) / 1e6;
}

BenchResult run_bench(const BenchSettings& settings, int progress_fd) {
  const Address server = settings.unix_path.empty() ? resolve(settings.host, settings.port).front()
                                                    : Address::unix_path(settings.unix_path);
  Plan plan(server, make_payload(settings.size), settings.prefix);
  if (settings.sources > 0 && is_ipv4_loopback(plan.server)) {
    plan.sources = loopback_sources(settings.sources);
  }
  plan.timeout = settings.timeout;
  plan.any_reply = settings.any_reply;
  plan.by_duration = settings.duration.count() > 0;
  plan.remaining.store(static_cast<std::int64_t>(settings.requests));

  std::vector<std::unique_ptr<Worker>> workers;
  workers.reserve(settings.concurrency);
  for (unsigned i = 0; i < settings.concurrency; ++i) {
    workers.push_back(std::make_unique<Worker>(plan, i));
  }

  std::mutex mutex;
  std::condition_variable finished;
  unsigned running = settings.concurrency;
  const Clock::time_point start = Clock::now();
  plan.stop_at = start + settings.duration;
  std::vector<std::thread> threads;
  threads.reserve(workers.size());
  for (auto& worker : workers) {
    threads.emplace_back([&, w = worker.get()] {
      w->run();
      {
        const std::lock_guard<std::mutex> lock(mutex);
        --running;
      }
      finished.notify_one();
    });
  }
  Clock::time_point end;
  {
    std::unique_lock<std::mutex> lock(mutex);
    while (running > 0) {
      finished.wait_for(lock, kProgressEvery);
      if (progress_fd < 0 || running == 0) continue;
      std::uint64_t done = 0;
      for (const auto& worker : workers) done += worker->done();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const std::string line = "\r" + std::to_string(done) + " requests, " +
                               format_fixed(static_cast<double>(done) / seconds, 0) +
                               " requests/s, " + format_fixed(seconds, 1) + " s  ";
      (void)::write(progress_fd, line.data(), line.size());
    }
    end = Clock::now();
  }
  for (std::thread& thread : threads) thread.join();
  if (progress_fd >= 0) {
    constexpr std::string_view kClear = "\r\033[K";
    (void)::write(progress_fd, kClear.data(), kClear.size());
  }

  BenchResult result;
  result.elapsed = end - start;
  for (const auto& worker : workers) worker->add_to(result);
  return result;
}

std::string format_report(const BenchSettings& settings, const BenchResult& result) {
  const Histogram& h = result.latency;
  std::string out;
  out += "target     " + cli::target_name(settings) + ", " + std::to_string(settings.concurrency) +
         " concurrent, " + std::to_string(settings.size) + "-byte requests\n";
  out += "requests   " + std::to_string(result.ok) + " ok, " +
         std::to_string(result.error_count()) + " errors in " + format_fixed(result.seconds(), 3) +
         " s\n";
  out += "rate       " + format_fixed(result.requests_per_second(), 0) + " requests/s, " +
         format_fixed(result.megabytes_per_second(settings.size), 2) + " MB/s\n";
  out += "latency    p50 " + format_ms(h.quantile(0.50)) + " ms, p90 " +
         format_ms(h.quantile(0.90)) + " ms, p99 " + format_ms(h.quantile(0.99)) + " ms, max " +
         format_ms(h.max()) + " ms\n";
  if (!result.replies.empty()) {
    out += "replies   ";
    for (const auto& [word, n] : result.replies) out += " " + word + "=" + std::to_string(n);
    out += "\n";
  }
  if (result.error_count() > 0) {
    out += "errors    ";
    for (std::size_t i = 0; i < kErrorKinds; ++i) {
      if (result.errors[i] == 0) continue;
      out += " " + std::string(to_string(static_cast<ErrorKind>(i))) + "=" +
             std::to_string(result.errors[i]);
    }
    out += "\nfirst      " + result.first_error + "\n";
  }
  return out;
}

std::string format_json(const BenchSettings& settings, const BenchResult& result) {
  const Histogram& h = result.latency;
  std::string out = "{";
  out += "\"host\":" + json_string(settings.host);
  out += ",\"port\":" + std::to_string(settings.port);
  out += ",\"unix\":" + json_string(settings.unix_path);
  out += ",\"concurrency\":" + std::to_string(settings.concurrency);
  out += ",\"size\":" + std::to_string(settings.size);
  out += ",\"ok\":" + std::to_string(result.ok);
  out += ",\"errors\":" + std::to_string(result.error_count());
  for (std::size_t i = 0; i < kErrorKinds; ++i) {
    out += ",\"errors_" + std::string(to_string(static_cast<ErrorKind>(i))) +
           "\":" + std::to_string(result.errors[i]);
  }
  out += ",\"seconds\":" + format_fixed(result.seconds(), 6);
  out += ",\"requests_per_s\":" + format_fixed(result.requests_per_second(), 1);
  out += ",\"mb_per_s\":" + format_fixed(result.megabytes_per_second(settings.size), 3);
  out += ",\"p50_ms\":" + format_ms(h.quantile(0.50));
  out += ",\"p90_ms\":" + format_ms(h.quantile(0.90));
  out += ",\"p99_ms\":" + format_ms(h.quantile(0.99));
  out += ",\"max_ms\":" + format_ms(h.max());
  out += ",\"bytes_sent\":" + std::to_string(result.bytes_sent);
  out += ",\"bytes_received\":" + std::to_string(result.bytes_received);
  out += ",\"first_error\":" + json_string(result.first_error);
  out += ",\"replies\":{";
  for (const auto& [word, n] : result.replies) {
    if (out.back() != '{') out += ',';
    out += json_string(word) + ":" + std::to_string(n);
  }
  out += "}";
  out += "}\n";
  return out;
}

}  // namespace sockecho::bench
