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

// How often a full rate table may be swept for sources whose buckets have refilled: a flood of
// new (spoofed) sources must not cost a sweep per datagram.
constexpr std::chrono::milliseconds kSweepInterval{100};

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
  std::string key = source.source_key();
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
      rate_(options_.rate_per_source.value_or(
          socket_.address().is_loopback() ? 0 : kDefaultDatagramRate)),
      limit_(rate_, options_.max_sources) {
  if (!handler_) throw std::invalid_argument("handler is empty");
}

std::unique_ptr<ServerCore::Worker> DatagramServer::make_worker() {
  return std::make_unique<DatagramWorker>(*this);
}

std::string DatagramServer::describe() const {
  return "listen=" + name() + " mode=udp max_growth=" + std::to_string(options_.max_growth) +
         " max_bytes=" + std::to_string(options_.max_bytes) +
         " rate_per_source=" + std::to_string(rate_);
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
