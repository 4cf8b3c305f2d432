// sockecho: the Prometheus text exposition (format 0.0.4), written family by family, and the
// Collector interface through which each unit that counts something exposes its own families.
// The metrics unit gathers collectors without knowing what they are.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "sockecho/export.hpp"

namespace sockecho {

// One metric family at a time, with its HELP and TYPE lines, then its samples.
class SOCKECHO_EXPORT Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help);
  // A sample: name, labels ("" or `outcome="ok"`, see label()), value.
  void sample(std::string_view name, std::string_view labels, std::uint64_t value);
  void sample(std::string_view name, std::string_view labels, double value);
  // A family of one sample without labels.
  template <typename Value>
  void single(std::string_view name, std::string_view type, std::string_view help, Value value) {
    family(name, type, help);
    sample(name, "", value);
  }
  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  void start(std::string_view name, std::string_view labels);
  std::string out_;
};

// Upper bounds, in seconds, of a duration histogram's buckets (+Inf follows).
inline constexpr std::array<double, 16> kDurationBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   10,   30};

// Durations counted in kDurationBuckets, for a family of type histogram. Atomics only: observing
// never waits for a scrape, nor a scrape for an observation.
class SOCKECHO_EXPORT DurationHistogram {
 public:
  void observe(std::chrono::microseconds duration) noexcept;
  // The family `name` (HELP `help`): its _bucket samples, _sum (seconds) and _count.
  void collect(Exposition& out, const std::string& name, std::string_view help) const;

 private:
  std::array<std::atomic<std::uint64_t>, kDurationBuckets.size() + 1> buckets_{};  // +Inf last
  std::atomic<std::uint64_t> sum_us_{0};
};

// `key="value"`, for a sample's labels (values are sockecho's own words: nothing to escape).
[[nodiscard]] SOCKECHO_EXPORT std::string label(std::string_view key, std::string_view value);

// A source of metric families: a server, a job queue. collect() is called on a scrape, from the
// metrics listener's threads, while the source serves: it reads counters (atomics, or a lock that
// nothing holds for long) and writes each family with HELP and TYPE, base units, _total on
// counters.
class SOCKECHO_EXPORT Collector {
 public:
  virtual void collect(Exposition& out) const = 0;

 protected:
  Collector() = default;
  Collector(const Collector&) = default;
  Collector& operator=(const Collector&) = default;
  Collector(Collector&&) = default;
  Collector& operator=(Collector&&) = default;
  ~Collector() = default;
};

}  // namespace sockecho
