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
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server_core.hpp"

namespace sockecho {

// Datagrams answered per second per source address when bound beyond loopback, unless chosen.
inline constexpr unsigned kDefaultDatagramRate = 1000;
// Source addresses the rate limit keeps a bucket for; past it, new sources share one bucket.
inline constexpr std::size_t kDefaultRateSources = 4096;

// A token bucket per source address (an IPv4 or IPv6 address, without the port; IPv4-mapped
// IPv6 counts as IPv4): each source may send `rate` datagrams a second, in bursts of up to one
// second's worth. Over it, admit() says no until the bucket refills: the source is paused, never
// banned. The table is bounded: once `max_sources` sources are tracked, buckets that have refilled
// are dropped, and if none has, a new source shares one overflow bucket with the others like it,
// so many (spoofed) sources cannot grow memory or get more than one more bucket's worth.
// Not thread-safe: the server's one loop owns it.
class SourceRateLimit {
 public:
  // rate 0: everything is admitted.
  explicit SourceRateLimit(unsigned rate, std::size_t max_sources = kDefaultRateSources);
  // True when `source` may be answered now (and takes one token from its bucket).
  [[nodiscard]] bool admit(const Address& source, Clock::time_point now = Clock::now());
  [[nodiscard]] std::size_t tracked() const noexcept { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated;
  };
  bool take(Bucket& bucket, Clock::time_point now) const noexcept;
  void forget_full(Clock::time_point now);

  double rate_;
  std::size_t max_sources_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::optional<Bucket> overflow_;
  Clock::time_point next_sweep_{};  // a full table is swept at most this often
};

struct DatagramOptions {
  // Most bytes a reply may be larger than its request: the prefix's length for the document's
  // handler. A larger reply is not sent (outcome too_large), so whatever the handler does, no
  // datagram is amplified by more than this.
  std::size_t max_growth = kDefaultPrefix.size();
  // Largest request taken; a larger datagram gets no reply, outcome too_large. 0: the protocol's
  // maximum, which applies anyway.
  std::size_t max_bytes = 0;
  // Datagrams a second answered per source (SourceRateLimit); over it they are dropped
  // unanswered, outcome refused with reason=rate. 0: no limit. Unset: none on a loopback address
  // (only this host can send from there), kDefaultDatagramRate on any other.
  std::optional<unsigned> rate_per_source;
  std::size_t max_sources = kDefaultRateSources;
  // Start and stop lines, and a line for each datagram that fails, at most one a second (the
  // others counted in the next): a flood of bad datagrams cannot flood the log.
  Logger log;
};

// Serves a UDP socket on one thread, the one that calls run(): for every datagram, the handler
// builds a reply from its request (the datagram's bytes, its sender, the socket's address), and
// the reply goes back to the sender in one datagram. A datagram that arrived truncated, is over
// max_bytes, or whose reply would be larger than a datagram or than the request plus max_growth
// gets no reply (too_large): a reply is sent whole or not at all. A reply the handler failed
// (Reply::fail()) is not sent; one it marked with another outcome is, and counts as that. A
// handler that throws costs that datagram's reply (outcome error), nothing else. run(), stop(),
// stopping() and stats() (transport datagram) are ServerCore's.
class DatagramServer final : public ServerCore {
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
  // The rate in force (options' rate_per_source, or the default for the bound address).
  [[nodiscard]] unsigned rate_per_source() const noexcept { return rate_; }
  [[nodiscard]] const DatagramOptions& options() const noexcept { return options_; }

  // sockecho_datagrams_* (received, by outcome), their bytes, and sockecho_up.
  void collect(Exposition& out) const override;

 private:
  class DatagramWorker;

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
  unsigned rate_;
  SourceRateLimit limit_;  // the one worker's alone
  FailureLines failures_;
};

}  // namespace sockecho
