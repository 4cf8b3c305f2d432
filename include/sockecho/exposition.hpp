// sockecho: the Prometheus text exposition (format 0.0.4), written family by family, and the
// Collector interface through which each unit that counts something exposes its own families.
// The metrics unit gathers collectors without knowing what they are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sockecho {

// One metric family at a time, with its HELP and TYPE lines, then its samples.
class Exposition {
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

// `key="value"`, for a sample's labels (values are sockecho's own words: nothing to escape).
[[nodiscard]] std::string label(std::string_view key, std::string_view value);

// A source of metric families: a server, a job queue. collect() is called on a scrape, from the
// metrics listener's threads, while the source serves: it reads counters (atomics, or a lock that
// nothing holds for long) and writes each family with HELP and TYPE, base units, _total on
// counters.
class Collector {
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
