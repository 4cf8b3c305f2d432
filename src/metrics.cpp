#include "sockecho/metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "http_head.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/exposition.hpp"
#include "sockecho/version.hpp"

namespace sockecho {

namespace {

using detail::HttpRequestHead;
using detail::parse_http_head;

constexpr std::size_t kMostUnreadAfterAnswer = std::size_t{64} << 10;

// "0.005", "+Inf": the le label of a bucket.
// The process_* set, from /proc and getrusage; a value that cannot be read is left out.
void process_metrics(Exposition& out) {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    const auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    out.single("process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.",
               seconds(usage.ru_utime) + seconds(usage.ru_stime));
  }
  const long page = ::sysconf(_SC_PAGESIZE);
  std::ifstream statm("/proc/self/statm");
  std::uint64_t virtual_pages = 0;
  std::uint64_t resident_pages = 0;
  if (page > 0 && statm >> virtual_pages >> resident_pages) {
    const auto bytes = static_cast<std::uint64_t>(page);
    out.single("process_virtual_memory_bytes", "gauge", "Virtual memory size, bytes.",
               virtual_pages * bytes);
    out.single("process_resident_memory_bytes", "gauge", "Resident memory size, bytes.",
               resident_pages * bytes);
  }
  const std::unique_ptr<DIR, int (*)(DIR*)> fds(::opendir("/proc/self/fd"), &::closedir);
  if (fds) {
    std::uint64_t open = 0;
    // readdir() is safe here: this DIR is this call's alone (readdir_r is deprecated).
    // cppcheck-suppress readdirCalled
    while (const dirent* entry = ::readdir(fds.get())) {
      if (entry->d_name[0] != '.') ++open;
    }
    out.single("process_open_fds", "gauge", "Open file descriptors.", open - 1);  // less the DIR's
  }
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY) {
    out.single("process_max_fds", "gauge", "Most open file descriptors (soft limit).",
               static_cast<std::uint64_t>(files.rlim_cur));
  }
  // Start time: the process's start in clock ticks after boot (/proc/self/stat, field 22) plus
  // the boot time (/proc/stat, btime).
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  const std::size_t close = line.rfind(')');
  std::ifstream system("/proc/stat");
  std::uint64_t boot = 0;
  for (std::string entry; std::getline(system, entry);) {
    if (entry.rfind("btime ", 0) == 0) boot = std::strtoull(entry.c_str() + 6, nullptr, 10);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (close != std::string::npos && boot > 0 && ticks > 0) {
    std::istringstream fields(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && fields >> field; ++i) {
      if (i == 22) {
        const double start = static_cast<double>(boot) +
                             static_cast<double>(std::strtoull(field.c_str(), nullptr, 10)) /
                                 static_cast<double>(ticks);
        out.single("process_start_time_seconds", "gauge",
                   "Start time of the process since the Unix epoch, seconds.", start);
      }
    }
  }
}

std::string_view reason_of(int status) noexcept {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

}  // namespace

Metrics::Metrics() noexcept = default;

void Metrics::observe(const ConnectionRecord& record) noexcept {
  durations_.observe(record.duration);
}

void Metrics::count_http(int status) noexcept {
  if (status == 431) status = 400;
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) http_[i].fetch_add(1, std::memory_order_relaxed);
  }
}

void Metrics::add(const Collector& collector) { collectors_.push_back(&collector); }

std::string Metrics::exposition() const {
  Exposition out;
  out.family("sockecho_build_info", "gauge", "The sockecho version, as a label; always 1.");
  out.sample("sockecho_build_info", label("version", kVersion), std::uint64_t{1});
  for (const Collector* collector : collectors_) collector->collect(out);

  durations_.collect(out, "sockecho_request_duration_seconds",
                     "Time from accept to close of each connection, seconds.");

  out.family("sockecho_metrics_requests_total", "counter",
             "Requests to this metrics listener, by HTTP status.");
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    out.sample("sockecho_metrics_requests_total", label("code", std::to_string(kStatuses[i])),
               http_[i].load(std::memory_order_relaxed));
  }
  process_metrics(out);
  return out.take();
}

namespace {

// An answer of the metrics listener: status, body, and what goes with them.
struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string_view content_type = "text/plain; charset=utf-8";
  std::string_view extra_header;
};

class MetricsProtocol final : public Protocol {
 public:
  MetricsProtocol(Metrics& metrics, std::function<bool()> serving, Logger log)
      : metrics_(metrics), serving_(std::move(serving)), log_(std::move(log)) {
    if (!serving_) throw std::invalid_argument("metrics_protocol: serving is empty");
  }

  void serve(Connection& connection, Workspace& /*workspace*/) override {
    connection.deadline().set_end(Clock::now() + kHttpRequestTime);
    std::array<char, 2048> chunk{};
    HttpRequestHead request;
    std::string head;
    HttpAnswer answer;
    answer.status = read_head(connection, chunk, head, request);
    if (answer.status == 0) route(request, answer);
    if (answer.body.empty()) answer.body = std::string(reason_of(answer.status)) + "\n";
    metrics_.count_http(answer.status);
    if (log_.enabled(LogLevel::verbose)) log_answer(connection, request, answer.status);
    respond(connection, answer);
    drain(connection, chunk);
  }

  [[nodiscard]] std::string describe() const override { return "mode=metrics"; }

 private:
  // Reads the request head: 0 once it is whole, or the status that answers it already.
  static int read_head(Connection& connection, std::array<char, 2048>& chunk, std::string& head,
                       HttpRequestHead& request) {
    try {
      while (request.state == HttpRequestHead::State::incomplete) {
        const std::size_t n = connection.read_some(chunk.data(), chunk.size());
        if (n == 0) return 400;  // closed before the head was whole
        head.append(chunk.data(), n);
        request = parse_http_head(head);
        if (request.state == HttpRequestHead::State::incomplete && head.size() > kMaxHttpHead) {
          return 431;
        }
      }
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::timed_out) throw;
      return 408;
    }
    return request.state == HttpRequestHead::State::bad ? 400 : 0;
  }

  void route(const HttpRequestHead& request, HttpAnswer& answer) const {
    if (request.method != "GET") {
      answer.status = 405;
      answer.extra_header = "Allow: GET\r\n";
    } else if (request.target == "/metrics") {
      answer.status = 200;
      answer.body = metrics_.exposition();
      answer.content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (request.target == "/health") {
      const bool up = serving_();
      answer.status = up ? 200 : 503;
      answer.body = up ? "ok\n" : "stopping\n";
    } else {
      answer.status = 404;
    }
  }

  void log_answer(const Connection& connection, const HttpRequestHead& request, int status) const {
    const bool parsed = request.state == HttpRequestHead::State::complete;
    log_.event(LogLevel::verbose, "metrics peer=" + connection.peer().to_string() + " request=" +
                                      log_quoted(parsed ? std::string(request.method) + " " +
                                                              std::string(request.target)
                                                        : std::string("-")) +
                                      " status=" + std::to_string(status));
  }

  static void respond(Connection& connection, const HttpAnswer& answer) {
    const std::string head = "HTTP/1.1 " + std::to_string(answer.status) + " " +
                             std::string(reason_of(answer.status)) +
                             "\r\nContent-Type: " + std::string(answer.content_type) +
                             "\r\nContent-Length: " + std::to_string(answer.body.size()) + "\r\n" +
                             std::string(answer.extra_header) + "Connection: close\r\n\r\n";
    const std::array<std::string_view, 2> parts = {head, answer.body};
    connection.write_all(parts.data(), parts.size());
    connection.close_write();
  }

  // Whatever the client sent beyond the head is read (within the same limits) before the close,
  // which would otherwise reset the connection and could destroy the answer in flight.
  static void drain(Connection& connection, std::array<char, 2048>& chunk) {
    std::size_t unread = 0;
    while (unread < kMostUnreadAfterAnswer) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) break;
      unread += n;
    }
  }

  Metrics& metrics_;
  std::function<bool()> serving_;
  Logger log_;
};

}  // namespace

std::shared_ptr<Protocol> metrics_protocol(Metrics& metrics, std::function<bool()> serving,
                                           Logger log) {
  return std::make_shared<MetricsProtocol>(metrics, std::move(serving), std::move(log));
}

}  // namespace sockecho
