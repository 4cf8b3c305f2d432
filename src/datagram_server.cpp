#include "sockecho/datagram_server.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace sockecho {

namespace {

// How often a full rate table may be swept for sources whose buckets have refilled: a flood of
// new (spoofed) sources must not cost a sweep per datagram.
constexpr std::chrono::milliseconds kSweepInterval{100};
// How often the host's addresses may be looked up again, for datagrams from the server's port.
constexpr std::chrono::seconds kOwnLookUpInterval{1};
// Source ports below this are the well-known services (echo 7, chargen 19, daytime 13, ...): a
// datagram from one is never a client's, and answering a spoofed one starts a loop.
constexpr std::uint16_t kFirstClientPort = 1024;

}  // namespace

SourceRateLimit::SourceRateLimit(unsigned rate, std::uint64_t bytes_rate, std::size_t max_sources)
    : rate_(rate),
      bytes_rate_(static_cast<double>(bytes_rate)),
      max_sources_(std::max<std::size_t>(max_sources, 1)) {}

SourceRateLimit::Bucket SourceRateLimit::full(Clock::time_point now) const noexcept {
  return Bucket{rate_, bytes_rate_, now};
}

void SourceRateLimit::refill(Bucket& bucket, Clock::time_point now) const noexcept {
  const double elapsed = std::max(std::chrono::duration<double>(now - bucket.updated).count(), 0.0);
  bucket.tokens = std::min(rate_, bucket.tokens + elapsed * rate_);
  bucket.bytes = std::min(bytes_rate_, bucket.bytes + elapsed * bytes_rate_);
  bucket.updated = now;
}

bool SourceRateLimit::take(Bucket& bucket, Clock::time_point now) noexcept {
  refill(bucket, now);
  last_ = &bucket;
  if (rate_ <= 0) return true;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

bool SourceRateLimit::admit_reply(std::size_t bytes) noexcept {
  if (bytes_rate_ <= 0 || last_ == nullptr) return true;
  const auto cost = static_cast<double>(bytes);
  if (last_->bytes < cost) return false;
  last_->bytes -= cost;
  return true;
}

void SourceRateLimit::forget_full(Clock::time_point now) {
  if (now < next_sweep_) return;
  next_sweep_ = now + kSweepInterval;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    Bucket later = it->second;
    refill(later, now);
    if (later.tokens >= rate_ && later.bytes >= bytes_rate_) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
}

bool SourceRateLimit::admit(const Address& source, Clock::time_point now) {
  last_ = nullptr;
  if (rate_ <= 0 && bytes_rate_ <= 0) return true;
  std::string key = source.source_key();
  const auto found = buckets_.find(key);
  if (found != buckets_.end()) return take(found->second, now);
  if (buckets_.size() >= max_sources_) forget_full(now);
  if (buckets_.size() >= max_sources_) {
    if (!overflow_) overflow_ = full(now);
    return take(*overflow_, now);
  }
  Bucket& bucket = buckets_.emplace(std::move(key), full(now)).first->second;
  return take(bucket, now);
}

OwnAddresses::OwnAddresses(const Address& bound) : bound_(bound), bound_key_(bound_.source_key()) {
  // 0.0.0.0 or ::, whose keys are their bytes: all zero.
  wildcard_ = bound_key_ == std::string(4, '\0') || bound_key_ == std::string(16, '\0');
}

void OwnAddresses::look_up(Clock::time_point now) {
  next_look_up_ = now + kOwnLookUpInterval;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return;  // the last list stands
  keys_.clear();
  for (const ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    const sockaddr* address = entry->ifa_addr;
    if (address == nullptr || (address->sa_family != AF_INET && address->sa_family != AF_INET6)) {
      continue;
    }
    const socklen_t size =
        address->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    try {
      keys_.push_back(Address(address, size).source_key());
    } catch (...) {  // NOLINT(bugprone-empty-catch): an address it cannot read is not ours to match
    }
  }
  ::freeifaddrs(list);
}

bool OwnAddresses::is_own(const Address& source, Clock::time_point now) {
  if (source.port() != bound_.port()) return false;
  const std::string key = source.source_key();
  if (key == bound_key_) return true;
  if (!wildcard_) return false;
  if (now >= next_look_up_) look_up(now);
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

// A worker of a datagram server: the buffer a datagram is received into, and its reply.
class DatagramServer::DatagramWorker final : public Worker {
 public:
  explicit DatagramWorker(DatagramServer& server) : server_(server), buffer_(kDatagramBufferSize) {}

  Wait wait() override {
    received_ = server_.socket_.receive(buffer_.data(), buffer_.size());
    return received_ ? Wait::taken : Wait::stopped;
  }
  void serve() override {
    server_.arrived();
    const std::size_t size = std::min(received_->size, buffer_.size());
    reply_.clear();
    Handled handled;
    handled.outcome = server_.answer(*received_, std::string_view(buffer_.data(), size), reply_,
                                     pieces_, handled);
    server_.counted(handled.outcome, size, handled.sent);
    if (handled.outcome != Outcome::ok) server_.log_failure(*received_, handled);
  }

 private:
  DatagramServer& server_;
  std::vector<char> buffer_;
  std::optional<Received> received_;
  Reply reply_;
  std::vector<std::string_view> pieces_;
};

DatagramServer::DatagramServer(DatagramSocket socket, Handler handler, DatagramOptions options)
    : ServerCore(Transport::datagram, 1, options.log),
      socket_(std::move(socket)),
      handler_(std::move(handler)),
      options_(std::move(options)),
      limit_(options_.rate_per_source, options_.bytes_per_source, options_.max_sources),
      own_(socket_.address()) {
  if (!handler_) throw std::invalid_argument("handler is empty");
}

std::unique_ptr<ServerCore::Worker> DatagramServer::make_worker() {
  return std::make_unique<DatagramWorker>(*this);
}

std::string DatagramServer::describe() const {
  return "listen=" + name() + " mode=udp max_growth=" + std::to_string(options_.max_growth) +
         " max_bytes=" + std::to_string(options_.max_bytes) +
         " rate_per_source=" + std::to_string(options_.rate_per_source) +
         " bytes_per_source=" + std::to_string(options_.bytes_per_source);
}

std::string DatagramServer::stop_words(const ServerStats& stats) const {
  return format_stats(stats);
}

void DatagramServer::collect(Exposition& out) const {
  const ServerStats d = stats();
  out.single("sockecho_datagrams_received_total", "counter", "Datagrams received.", d.accepted);
  out.family("sockecho_datagrams_total", "counter", "Datagrams handled, by outcome.");
  for (const Outcome outcome : kOutcomes) {
    out.sample("sockecho_datagrams_total", label("outcome", to_string(outcome)), d.count(outcome));
  }
  out.single("sockecho_datagram_bytes_received_total", "counter",
             "Bytes of the datagrams received.", d.bytes_in);
  out.single("sockecho_datagram_bytes_sent_total", "counter", "Bytes of the replies sent.",
             d.bytes_out);
  collect_up(out);
}

Outcome DatagramServer::answer(const Received& received, std::string_view request, Reply& reply,
                               std::vector<std::string_view>& pieces, Handled& handled) {
  std::string& detail = handled.detail;
  std::string_view& reason = handled.reason;
  const std::size_t limit = max_datagram(received.peer);
  if (received.truncated || received.size > limit) {
    reason = "truncated";
    return Outcome::too_large;
  }
  if (options_.max_bytes > 0 && received.size > options_.max_bytes) {
    reason = "max_bytes";
    return Outcome::too_large;
  }
  if (received.peer.port() < kFirstClientPort || own_.is_own(received.peer)) {
    reason = "loop";
    return Outcome::refused;
  }
  if (!limit_.admit(received.peer)) {
    reason = "rate";
    return Outcome::refused;
  }
  try {
    handler_(Request(request, received.peer, socket_.address()), reply);
  } catch (const std::exception& e) {
    detail = e.what();
    return Outcome::error;
  } catch (...) {  // a handler may throw anything; it still costs only this datagram
    detail = "unknown exception";
    return Outcome::error;
  }
  if (!reply.answered()) {
    detail = reply.detail();
    return reply.outcome();
  }
  return send(received, reply, pieces, handled);
}

Outcome DatagramServer::send(const Received& received, const Reply& reply,
                             std::vector<std::string_view>& pieces, Handled& handled) {
  std::string& detail = handled.detail;
  std::string_view& reason = handled.reason;
  // Never a cut reply, and never one that amplifies beyond the prefix.
  const std::size_t limit = max_datagram(received.peer);
  if (reply.size() > limit) {
    reason = "reply_too_large";
    detail = "reply of " + std::to_string(reply.size()) + " bytes is over " +
             std::to_string(limit) + ", the most one datagram carries";
    return Outcome::too_large;
  }
  if (reply.size() > received.size + options_.max_growth) {
    reason = "reply_growth";
    detail = "reply of " + std::to_string(reply.size()) + " bytes to a request of " +
             std::to_string(received.size) + " grows by more than " +
             std::to_string(options_.max_growth);
    return Outcome::too_large;
  }
  if (!limit_.admit_reply(reply.size())) {
    reason = "rate_bytes";
    return Outcome::refused;
  }
  reply.pieces(pieces);
  try {
    if (!socket_.send_to(received.peer, pieces.data(), pieces.size())) {
      detail = "stopped before the reply could be sent";
      return Outcome::error;
    }
  } catch (const std::system_error& e) {
    // One destination's trouble (unreachable, filtered): that datagram's, not the server's.
    detail = e.what();
    return Outcome::error;
  }
  handled.sent = reply.size();
  return reply.outcome();
}

void DatagramServer::log_failure(const Received& received, const Handled& handled) noexcept {
  const FailureLines::Pass pass = failures_.pass();
  if (!pass.write || !log().enabled(LogLevel::normal)) return;
  try {
    std::string line = "datagram peer=" + received.peer.to_string() +
                       " in=" + std::to_string(received.size) +
                       " outcome=" + std::string(to_string(handled.outcome));
    if (!handled.reason.empty()) line += " reason=" + std::string(handled.reason);
    if (!handled.detail.empty()) line += " error=" + log_quoted(handled.detail);
    if (pass.count > 1) {
      line += " (" + std::to_string(pass.count - 1) + " more failed since the last line)";
    }
    log().event(LogLevel::normal, line);
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the counters have it
  }
}

}  // namespace sockecho
