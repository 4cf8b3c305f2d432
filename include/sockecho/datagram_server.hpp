// sockecho: a server of datagrams, the server core with a UDP socket: each datagram received is
// one request, handed to the same Handler the stream protocols use, and its reply goes back as
// one datagram.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sockecho/datagram.hpp"
#include "sockecho/export.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server_core.hpp"

namespace sockecho {

// Datagrams answered per second per source address, unless chosen (on every address, loopback
// included: a loop between two echo servers runs on loopback as well).
inline constexpr unsigned kDefaultDatagramRate = 1000;
// Reply bytes sent per second per source address, unless chosen.
inline constexpr std::uint64_t kDefaultDatagramBytes = std::uint64_t{1} << 20;
// Source addresses the rate limit keeps a bucket for; past it, new sources share one bucket.
inline constexpr std::size_t kDefaultRateSources = 4096;

// Token buckets per source address (an IPv4 or IPv6 address, without the port; IPv4-mapped
// IPv6 counts as IPv4): each source may be answered `rate` datagrams and `bytes_rate` reply bytes
// a second, in bursts of up to one second's worth of each. Over either, it says no until the
// bucket refills: the source is paused, never banned. The table is bounded: once `max_sources`
// sources are tracked, buckets that have refilled are dropped, and if none has, a new source
// shares one overflow bucket with the others like it, so many (spoofed) sources cannot grow
// memory or get more than one more bucket's worth. Not thread-safe: the server's one loop owns it.
class SOCKECHO_EXPORT SourceRateLimit {
 public:
  // A rate of 0 is no limit of that kind; both 0: everything is admitted.
  explicit SourceRateLimit(unsigned rate, std::uint64_t bytes_rate = 0,
                           std::size_t max_sources = kDefaultRateSources);
  // True when a datagram from `source` may be answered now (and takes one datagram token).
  [[nodiscard]] bool admit(const Address& source, Clock::time_point now = Clock::now());
  // After admit() said yes, for that same source: true when a reply of `bytes` fits its byte
  // budget now (and takes them).
  [[nodiscard]] bool admit_reply(std::size_t bytes) noexcept;
  [[nodiscard]] std::size_t tracked() const noexcept { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    double bytes = 0;
    Clock::time_point updated;
  };
  [[nodiscard]] Bucket full(Clock::time_point now) const noexcept;
  void refill(Bucket& bucket, Clock::time_point now) const noexcept;
  bool take(Bucket& bucket, Clock::time_point now) noexcept;
  void forget_full(Clock::time_point now);

  double rate_;
  double bytes_rate_;
  Bucket* last_ = nullptr;  // the bucket admit() took from, for admit_reply()
  std::size_t max_sources_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::optional<Bucket> overflow_;
  Clock::time_point next_sweep_{};  // a full table is swept at most this often
};

// Whether a datagram comes from the server's own address and port: the bound address, or, bound
// to every address (0.0.0.0, ::), any address of this host's (looked up again at most once a
// second, and only for datagrams from the server's own port). Not thread-safe.
class SOCKECHO_EXPORT OwnAddresses {
 public:
  explicit OwnAddresses(const Address& bound);
  [[nodiscard]] bool is_own(const Address& source, Clock::time_point now = Clock::now());

 private:
  void look_up(Clock::time_point now);

  Address bound_;
  std::string bound_key_;
  bool wildcard_ = false;
  std::vector<std::string> keys_;  // this host's addresses, as Address::source_key() gives them
  Clock::time_point next_look_up_{};
};

struct SOCKECHO_EXPORT DatagramOptions {
  // Most bytes a reply may be larger than its request: the length of sockecho-server's default
  // prefix. A larger reply is not sent (outcome too_large), so whatever the handler does, no
  // datagram is amplified by more than this.
  std::size_t max_growth = kServerDefaultPrefix.size();
  // Largest request taken; a larger datagram gets no reply, outcome too_large. 0: the protocol's
  // maximum, which applies anyway.
  std::size_t max_bytes = 0;
  // Datagrams a second answered per source (SourceRateLimit); over it they are dropped
  // unanswered, outcome refused with reason=rate. 0: no limit.
  unsigned rate_per_source = kDefaultDatagramRate;
  // Reply bytes a second sent per source; over it a reply is not sent, outcome refused with
  // reason=rate_bytes. 0: no limit. With the datagram rate, what bounds a loop between two echo
  // servers (or a server and itself) that no rule about addresses can tell from clients.
  std::uint64_t bytes_per_source = kDefaultDatagramBytes;
  std::size_t max_sources = kDefaultRateSources;
  // Start and stop lines, and a line for each datagram that fails, at most one a second (the
  // others counted in the next): a flood of bad datagrams cannot flood the log.
  Logger log;
};

// Serves a UDP socket on one thread, the one that calls run(): for every datagram, the handler
// builds a reply from its request (the datagram's bytes, its sender, the socket's address), and
// the reply goes back to the sender in one datagram. A datagram that arrived truncated, is over
// max_bytes, or whose reply would be larger than a datagram or than the request plus max_growth
// gets no reply (too_large): a reply is sent whole or not at all. A datagram from a source port
// below 1024 (the well-known services, echo's 7 among them) or from the server's own address and
// port gets none either (refused, reason=loop): a spoofed one would start a loop. A reply the
// handler failed (Reply::fail()) is not sent; one it marked with another outcome is, and counts as
// that. A handler that throws costs that datagram's reply (outcome error), nothing else. run(),
// stop(), stopping() and stats() (transport datagram) are ServerCore's.
class SOCKECHO_EXPORT DatagramServer final : public ServerCore {
 public:
  // Throws std::invalid_argument when there is no handler.
  DatagramServer(DatagramSocket socket, Handler handler, DatagramOptions options = {});
  ~DatagramServer() override { end_delayed_stop(); }
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;
  DatagramServer(DatagramServer&&) = delete;
  DatagramServer& operator=(DatagramServer&&) = delete;

  [[nodiscard]] const Address& address() const noexcept { return socket_.address(); }
  // "udp:127.0.0.1:12387".
  [[nodiscard]] std::string name() const { return socket_.name(); }
  // The rates in force, as the options give them.
  [[nodiscard]] unsigned rate_per_source() const noexcept { return options_.rate_per_source; }
  [[nodiscard]] std::uint64_t bytes_per_source() const noexcept {
    return options_.bytes_per_source;
  }
  [[nodiscard]] const DatagramOptions& options() const noexcept { return options_; }

  // sockecho_datagrams_* (received, by outcome), their bytes, and sockecho_up.
  void collect(Exposition& out) const override;

 private:
  class SOCKECHO_NO_EXPORT DatagramWorker;

  std::unique_ptr<Worker> make_worker() override;
  void interrupt() noexcept override { socket_.interrupt(); }
  [[nodiscard]] std::string describe() const override;
  [[nodiscard]] std::string stop_words(const ServerStats& stats) const override;
  [[nodiscard]] std::string stopping_line() const override { return "stopping: no more datagrams"; }

  // What became of one datagram: its outcome, the reply bytes sent, and why when it is not ok.
  struct Handled {
    Outcome outcome = Outcome::ok;
    std::size_t sent = 0;
    std::string detail;
    std::string_view reason;
  };
  // Answers one datagram (its bytes in `request`): its outcome.
  Outcome answer(const Received& received, std::string_view request, Reply& reply,
                 std::vector<std::string_view>& pieces, Handled& handled);
  // Sends the reply if it is whole and within the growth bound: its outcome.
  Outcome send(const Received& received, const Reply& reply, std::vector<std::string_view>& pieces,
               Handled& handled);
  // At most one failure line a second; those in between are counted in the next one.
  void log_failure(const Received& received, const Handled& handled) noexcept;

  DatagramSocket socket_;
  Handler handler_;
  DatagramOptions options_;
  SourceRateLimit limit_;  // the one worker's alone
  OwnAddresses own_;       // likewise
  FailureLines failures_;
};

}  // namespace sockecho
