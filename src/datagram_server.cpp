#include "sockecho/datagram_server.hpp"

#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace sockecho {

namespace {

// The least time between two failure lines; the failures between are counted in the next.
constexpr std::chrono::seconds kFailureLogInterval{1};
// How often a full rate table may be swept for sources whose buckets have refilled: a flood of
// new (spoofed) sources must not cost a sweep per datagram.
constexpr std::chrono::milliseconds kSweepInterval{100};

// The bytes that identify a source for the rate limit: its IP address alone (no port), an
// IPv4-mapped IPv6 address as its IPv4 address.
std::string source_key(const Address& peer) {
  if (peer.family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(peer.data());
    return {reinterpret_cast<const char*>(&in->sin_addr), sizeof in->sin_addr};
  }
  if (peer.family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer.data());
    const auto* bytes = reinterpret_cast<const char*>(&in6->sin6_addr);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return {bytes + 12, 4};
    return {bytes, sizeof in6->sin6_addr};
  }
  return {};
}

// 127.0.0.0/8, ::1, and ::ffff:127.x.y.z: addresses only this host can send from.
bool loopback(const Address& address) {
  const std::string key = source_key(address);
  if (key.size() == 4) return static_cast<unsigned char>(key[0]) == 127;
  if (address.family() != AF_INET6) return false;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address.data());
  return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

void append_outcomes(std::string& line, const DatagramStats& stats) {
  for (const Outcome outcome : kOutcomes) {
    line += " " + std::string(to_string(outcome)) + "=" + std::to_string(stats.count(outcome));
  }
}

}  // namespace

SourceRateLimit::SourceRateLimit(unsigned rate, std::size_t max_sources)
    : rate_(rate), max_sources_(std::max<std::size_t>(max_sources, 1)) {}

bool SourceRateLimit::take(Bucket& bucket, Clock::time_point now) const noexcept {
  const std::chrono::duration<double> elapsed = now - bucket.updated;
  bucket.tokens = std::min(rate_, bucket.tokens + std::max(elapsed.count(), 0.0) * rate_);
  bucket.updated = now;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

void SourceRateLimit::forget_full(Clock::time_point now) {
  if (now < next_sweep_) return;
  next_sweep_ = now + kSweepInterval;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const std::chrono::duration<double> elapsed = now - it->second.updated;
    if (it->second.tokens + elapsed.count() * rate_ >= rate_) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
}

bool SourceRateLimit::admit(const Address& source, Clock::time_point now) {
  if (rate_ <= 0) return true;
  std::string key = source_key(source);
  const auto found = buckets_.find(key);
  if (found != buckets_.end()) return take(found->second, now);
  if (buckets_.size() >= max_sources_) forget_full(now);
  if (buckets_.size() >= max_sources_) {
    if (!overflow_) overflow_ = Bucket{rate_, now};
    return take(*overflow_, now);
  }
  Bucket& bucket = buckets_.emplace(std::move(key), Bucket{rate_, now}).first->second;
  return take(bucket, now);
}

std::string format_stats(const DatagramStats& stats) {
  std::string line = "datagrams=" + std::to_string(stats.received);
  append_outcomes(line, stats);
  line += " bytes_in=" + std::to_string(stats.bytes_in);
  line += " bytes_out=" + std::to_string(stats.bytes_out);
  return line;
}

DatagramServer::DatagramServer(DatagramSocket socket, Handler handler, DatagramOptions options)
    : socket_(std::move(socket)),
      handler_(std::move(handler)),
      options_(std::move(options)),
      rate_(options_.rate_per_source.value_or(loopback(socket_.address()) ? 0
                                                                          : kDefaultDatagramRate)),
      limit_(rate_, options_.max_sources),
      buffer_(kDatagramBufferSize) {
  if (!handler_) throw std::invalid_argument("handler is empty");
}

void DatagramServer::run() {
  options_.log.event(LogLevel::normal, "start listen=" + name() + " mode=udp max_growth=" +
                                           std::to_string(options_.max_growth) +
                                           " max_bytes=" + std::to_string(options_.max_bytes) +
                                           " rate_per_source=" + std::to_string(rate_));
  std::exception_ptr fatal;
  try {
    for (;;) {
      const std::optional<Received> received = socket_.receive(buffer_.data(), buffer_.size());
      if (!received) break;
      received_.fetch_add(1, std::memory_order_relaxed);
      bytes_in_.fetch_add(std::min(received->size, buffer_.size()), std::memory_order_relaxed);
      std::string detail;
      std::string_view reason;
      const Outcome outcome = answer(*received, detail, reason);
      count(*received, outcome, detail, reason);
    }
  } catch (...) {
    fatal = std::current_exception();
  }
  std::string line = "stop " + format_stats(stats());
  options_.log.event(LogLevel::normal, line);
  if (fatal) std::rethrow_exception(fatal);
}

void DatagramServer::stop() noexcept {
  if (stopping_.exchange(true)) return;
  options_.log.event(LogLevel::normal, "stopping: no more datagrams");
  socket_.interrupt();
}

Outcome DatagramServer::answer(const Received& received, std::string& detail,
                               std::string_view& reason) {
  const std::size_t limit = max_datagram(received.peer);
  if (received.truncated || received.size > limit) {
    reason = "truncated";
    return Outcome::too_large;
  }
  if (options_.max_bytes > 0 && received.size > options_.max_bytes) {
    reason = "max_bytes";
    return Outcome::too_large;
  }
  if (!limit_.admit(received.peer)) {
    reason = "rate";
    return Outcome::refused;
  }
  const std::string_view request(buffer_.data(), received.size);
  reply_.clear();
  try {
    handler_(request, reply_);
  } catch (const std::exception& e) {
    detail = e.what();
    return Outcome::error;
  } catch (...) {  // a handler may throw anything; it still costs only this datagram
    detail = "unknown exception";
    return Outcome::error;
  }
  // Never a cut reply, and never one that amplifies beyond the prefix.
  if (reply_.size() > limit) {
    reason = "reply_too_large";
    detail = "reply of " + std::to_string(reply_.size()) + " bytes is over " +
             std::to_string(limit) + ", the most one datagram carries";
    return Outcome::too_large;
  }
  if (reply_.size() > received.size + options_.max_growth) {
    reason = "reply_growth";
    detail = "reply of " + std::to_string(reply_.size()) + " bytes to a request of " +
             std::to_string(received.size) + " grows by more than " +
             std::to_string(options_.max_growth);
    return Outcome::too_large;
  }
  reply_.pieces(pieces_);
  try {
    if (!socket_.send_to(received.peer, pieces_.data(), pieces_.size())) {
      detail = "stopped before the reply could be sent";
      return Outcome::error;
    }
  } catch (const std::system_error& e) {
    // One destination's trouble (unreachable, filtered): that datagram's, not the server's.
    detail = e.what();
    return Outcome::error;
  }
  bytes_out_.fetch_add(reply_.size(), std::memory_order_relaxed);
  return reply_.outcome();
}

void DatagramServer::count(const Received& received, Outcome outcome, const std::string& detail,
                           std::string_view reason) noexcept {
  outcomes_[static_cast<std::size_t>(outcome)].fetch_add(1, std::memory_order_relaxed);
  if (outcome != Outcome::ok) log_failure(received, outcome, detail, reason);
}

void DatagramServer::log_failure(const Received& received, Outcome outcome,
                                 const std::string& detail, std::string_view reason) noexcept {
  ++unlogged_failures_;
  const Clock::time_point now = Clock::now();
  const auto since = now - failure_logged_;
  if (failure_logged_ != Clock::time_point{} && since < kFailureLogInterval) return;
  if (!options_.log.enabled(LogLevel::normal)) return;
  try {
    std::string line = "datagram peer=" + received.peer.to_string() +
                       " in=" + std::to_string(received.size) +
                       " outcome=" + std::string(to_string(outcome));
    if (!reason.empty()) line += " reason=" + std::string(reason);
    if (!detail.empty()) line += " error=\"" + detail + "\"";
    if (unlogged_failures_ > 1) {
      line += " (" + std::to_string(unlogged_failures_ - 1) + " more failed since the last line)";
    }
    options_.log.event(LogLevel::normal, line);
    unlogged_failures_ = 0;
    failure_logged_ = now;
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the counters have it
  }
}

DatagramStats DatagramServer::stats() const noexcept {
  DatagramStats s;
  s.received = received_.load();
  for (std::size_t i = 0; i < kOutcomeCount; ++i) s.outcomes[i] = outcomes_[i].load();
  s.bytes_in = bytes_in_.load();
  s.bytes_out = bytes_out_.load();
  return s;
}

}  // namespace sockecho
