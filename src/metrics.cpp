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
#include <system_error>

#include "sockecho/deadline.hpp"
#include "sockecho/version.hpp"

namespace sockecho {

namespace {

constexpr std::chrono::milliseconds kOutOfDescriptorsPause{100};
constexpr std::size_t kMostUnreadAfterAnswer = std::size_t{64} << 10;

// One metric family at a time, with its HELP and TYPE lines.
class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // A sample: name, labels ("" or `outcome="ok"`), value.
  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    start(name, labels);
    out_ += std::to_string(value);
    out_ += '\n';
  }
  void sample(std::string_view name, std::string_view labels, double value) {
    start(name, labels);
    std::array<char, 40> text{};
    (void)std::snprintf(text.data(), text.size(), "%.17g", value);
    out_ += text.data();
    out_ += '\n';
  }
  // A family of one sample without labels.
  template <typename Value>
  void single(std::string_view name, std::string_view type, std::string_view help, Value value) {
    family(name, type, help);
    sample(name, "", value);
  }
  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  void start(std::string_view name, std::string_view labels) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
  }
  std::string out_;
};

std::string label(std::string_view key, std::string_view value) {
  return std::string(key) + "=\"" + std::string(value) + '"';
}

// "0.005", "+Inf": the le label of a bucket.
std::string bucket_bound(double seconds) {
  std::array<char, 32> text{};
  (void)std::snprintf(text.data(), text.size(), "%g", seconds);
  return text.data();
}

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

bool is_token_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// The next line of `text` from `at` (without its CR LF or LF), advancing `at`; std::nullopt when
// no line end follows.
std::optional<std::string_view> next_line(std::string_view text, std::size_t& at) noexcept {
  const std::size_t end = text.find('\n', at);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view line = text.substr(at, end - at);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  at = end + 1;
  return line;
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

// False once the server of the sources (stream or datagram) has begun to stop.
bool serving(const MetricsSources& sources) noexcept {
  return (sources.server == nullptr || !sources.server->stopping()) &&
         (sources.datagrams == nullptr || !sources.datagrams->stopping());
}

}  // namespace

Metrics::Metrics() noexcept = default;

void Metrics::observe(const ConnectionRecord& record) noexcept {
  const double seconds = static_cast<double>(record.duration.count()) / 1e6;
  const auto* bucket = std::lower_bound(kDurationBuckets.begin(), kDurationBuckets.end(), seconds);
  const auto index = static_cast<std::size_t>(bucket - kDurationBuckets.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  duration_sum_us_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(
                                 0, static_cast<std::int64_t>(record.duration.count()))),
                             std::memory_order_relaxed);
  duration_count_.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::count_http(int status) noexcept {
  if (status == 431) status = 400;
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) http_[i].fetch_add(1, std::memory_order_relaxed);
  }
}

std::string Metrics::exposition(const MetricsSources& sources) const {
  Exposition out;
  out.family("sockecho_build_info", "gauge", "The sockecho version, as a label; always 1.");
  out.sample("sockecho_build_info", label("version", kVersion), std::uint64_t{1});

  if (const Server* server = sources.server) {
    const ServerStats s = server->stats();
    out.single("sockecho_connections_accepted_total", "counter", "Connections accepted.",
               s.accepted);
    out.family("sockecho_connections_total", "counter", "Connections finished, by outcome.");
    for (const Outcome outcome : kOutcomes) {
      out.sample("sockecho_connections_total", label("outcome", to_string(outcome)),
                 s.count(outcome));
    }
    out.single("sockecho_connections_active", "gauge", "Connections being served now.", s.active);
    out.single("sockecho_bytes_received_total", "counter", "Bytes read from finished connections.",
               s.bytes_in);
    out.single("sockecho_bytes_sent_total", "counter", "Bytes written to finished connections.",
               s.bytes_out);
    out.single("sockecho_workers", "gauge", "Worker threads running now, busy or waiting.",
               s.workers);
    out.single("sockecho_workers_max", "gauge", "Most worker threads (--workers).",
               std::uint64_t{server->options().workers});
  }

  if (const DatagramServer* udp = sources.datagrams) {
    const DatagramStats d = udp->stats();
    out.single("sockecho_datagrams_received_total", "counter", "Datagrams received.", d.received);
    out.family("sockecho_datagrams_total", "counter", "Datagrams handled, by outcome.");
    for (const Outcome outcome : kOutcomes) {
      out.sample("sockecho_datagrams_total", label("outcome", to_string(outcome)),
                 d.count(outcome));
    }
    out.single("sockecho_datagram_bytes_received_total", "counter",
               "Bytes of the datagrams received.", d.bytes_in);
    out.single("sockecho_datagram_bytes_sent_total", "counter", "Bytes of the replies sent.",
               d.bytes_out);
  }
  if (sources.server != nullptr || sources.datagrams != nullptr) {
    out.single("sockecho_up", "gauge", "1 while the server serves, 0 once it is stopping.",
               std::uint64_t{serving(sources) ? 1U : 0U});
  }

  const std::string name = "sockecho_request_duration_seconds";
  out.family(name, "histogram", "Time from accept to close of each connection, seconds.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= kDurationBuckets.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string bound =
        i < kDurationBuckets.size() ? bucket_bound(kDurationBuckets[i]) : std::string("+Inf");
    out.sample(name + "_bucket", label("le", bound), cumulative);
  }
  out.sample(name + "_sum", "",
             static_cast<double>(duration_sum_us_.load(std::memory_order_relaxed)) / 1e6);
  // The count is the +Inf bucket's, read once, so the two always agree.
  out.sample(name + "_count", "", cumulative);

  if (const JobQueue* jobs = sources.jobs) {
    const JobStats j = jobs->stats();
    out.single("sockecho_jobs_running", "gauge", "Background jobs running now.", j.running);
    out.single("sockecho_jobs_queued", "gauge", "Background jobs waiting to run.", j.queued);
    out.single("sockecho_jobs_accepted_total", "counter", "Background jobs acknowledged.",
               j.accepted);
    out.single("sockecho_jobs_refused_total", "counter",
               "Background jobs refused because the queue was full (busy).", j.busy);
    out.family("sockecho_jobs_total", "counter", "Background jobs finished, by outcome.");
    out.sample("sockecho_jobs_total", label("outcome", "ok"), j.ok);
    out.sample("sockecho_jobs_total", label("outcome", "failed"), j.failed);
    out.sample("sockecho_jobs_total", label("outcome", "timeout"), j.timeout);
    out.sample("sockecho_jobs_total", label("outcome", "too_large"), j.too_large);
  }

  out.family("sockecho_metrics_requests_total", "counter",
             "Requests to this metrics listener, by HTTP status.");
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    out.sample("sockecho_metrics_requests_total", label("code", std::to_string(kStatuses[i])),
               http_[i].load(std::memory_order_relaxed));
  }
  process_metrics(out);
  return out.take();
}

HttpRequestHead parse_http_head(std::string_view text) noexcept {
  HttpRequestHead head;
  std::size_t at = 0;
  const std::optional<std::string_view> request_line = next_line(text, at);
  if (!request_line) {
    // Not even a line yet; but a start that cannot become a request line is bad at once.
    const std::size_t space = text.find(' ');
    const std::string_view method = text.substr(0, space);
    if (!std::all_of(method.begin(), method.end(), is_token_char)) {
      head.state = HttpRequestHead::State::bad;
    }
    return head;
  }
  const std::string_view line = *request_line;
  const std::size_t first = line.find(' ');
  const std::size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (second == std::string_view::npos || line.find(' ', second + 1) != std::string_view::npos) {
    head.state = HttpRequestHead::State::bad;
    return head;
  }
  const std::string_view method = line.substr(0, first);
  const std::string_view target = line.substr(first + 1, second - first - 1);
  const std::string_view version = line.substr(second + 1);
  const bool good_method =
      !method.empty() && std::all_of(method.begin(), method.end(), is_token_char);
  const bool good_target = !target.empty() && target.front() == '/' &&
                           std::none_of(target.begin(), target.end(), [](char c) {
                             return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
                           });
  const bool good_version = version == "HTTP/1.0" || version == "HTTP/1.1";
  if (!good_method || !good_target || !good_version) {
    head.state = HttpRequestHead::State::bad;
    return head;
  }
  for (;;) {
    const std::optional<std::string_view> header = next_line(text, at);
    if (!header) return head;  // incomplete
    if (header->empty()) break;
    const std::size_t colon = header->find(':');
    if (colon == 0 || colon == std::string_view::npos ||
        !std::all_of(header->begin(), header->begin() + static_cast<std::ptrdiff_t>(colon),
                     is_token_char)) {
      head.state = HttpRequestHead::State::bad;
      return head;
    }
  }
  head.state = HttpRequestHead::State::complete;
  head.method = method;
  head.target = target.substr(0, target.find('?'));
  return head;
}

MetricsServer::MetricsServer(Listener listener, Metrics& metrics, const MetricsSources& sources,
                             Logger log)
    : listener_(std::move(listener)), metrics_(metrics), sources_(sources), log_(std::move(log)) {
  thread_ = std::thread([this] { run(); });
}

MetricsServer::~MetricsServer() {
  listener_.interrupt();
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::run() noexcept {
  for (;;) {
    try {
      std::optional<Connection> connection = listener_.accept();
      if (!connection) return;  // interrupted
      answer(*connection);
    } catch (const std::system_error& e) {
      // A peer that reset, or a descriptor shortage: this request is lost, the listener is not.
      if (log_.enabled(LogLevel::verbose)) {
        log_.event(LogLevel::verbose, std::string("metrics: ") + e.what());
      }
      if (e.code() == std::errc::too_many_files_open ||
          e.code() == std::errc::too_many_files_open_in_system) {
        std::this_thread::sleep_for(kOutOfDescriptorsPause);  // for one to come free
      }
    } catch (...) {
      if (log_.enabled(LogLevel::normal)) log_.event(LogLevel::normal, "metrics: request failed");
    }
  }
}

void MetricsServer::answer(Connection& connection) {
  connection.set_timeout(kHttpRequestTime);
  connection.deadline().set_end(Clock::now() + kHttpRequestTime);
  std::string head;
  std::array<char, 2048> chunk{};
  HttpRequestHead request;
  int status = 0;
  try {
    while (request.state == HttpRequestHead::State::incomplete) {
      const std::size_t n = connection.read_some(chunk.data(), chunk.size());
      if (n == 0) {
        status = 400;  // closed before the head was whole
        break;
      }
      head.append(chunk.data(), n);
      request = parse_http_head(head);
      if (request.state == HttpRequestHead::State::incomplete && head.size() > kMaxHttpHead) {
        status = 431;
        break;
      }
    }
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::timed_out) throw;
    status = 408;
  }
  std::string body;
  std::string_view content_type = "text/plain; charset=utf-8";
  std::string_view extra_header;
  if (status == 0 && request.state == HttpRequestHead::State::bad) status = 400;
  if (status == 0) {
    if (request.method != "GET") {
      status = 405;
      extra_header = "Allow: GET\r\n";
    } else if (request.target == "/metrics") {
      status = 200;
      body = metrics_.exposition(sources_);
      content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (request.target == "/health") {
      const bool up = serving(sources_);
      status = up ? 200 : 503;
      body = up ? "ok\n" : "stopping\n";
    } else {
      status = 404;
    }
  }
  if (body.empty()) body = std::string(reason_of(status)) + "\n";
  metrics_.count_http(status);
  if (log_.enabled(LogLevel::verbose)) {
    const bool parsed = request.state == HttpRequestHead::State::complete;
    log_.event(LogLevel::verbose,
               "metrics peer=" + connection.peer().to_string() + " request=\"" +
                   (parsed ? std::string(request.method) + " " + std::string(request.target)
                           : std::string("-")) +
                   "\" status=" + std::to_string(status));
  }
  std::string response = "HTTP/1.1 " + std::to_string(status) + " " +
                         std::string(reason_of(status)) +
                         "\r\nContent-Type: " + std::string(content_type) +
                         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                         std::string(extra_header) + "Connection: close\r\n\r\n";
  const std::array<std::string_view, 2> parts = {response, body};
  connection.write_all(parts.data(), parts.size());
  connection.close_write();
  // Whatever the client sent beyond the head is read (within the same limits) before the close,
  // which would otherwise reset the connection and could destroy the answer in flight.
  std::size_t unread = 0;
  while (unread < kMostUnreadAfterAnswer) {
    const std::size_t n = connection.read_some(chunk.data(), chunk.size());
    if (n == 0) break;
    unread += n;
  }
}

}  // namespace sockecho
