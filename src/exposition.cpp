#include "sockecho/exposition.hpp"

#include <algorithm>
#include <array>
#include <cstdio>

namespace sockecho {

void Exposition::family(std::string_view name, std::string_view type, std::string_view help) {
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

void Exposition::sample(std::string_view name, std::string_view labels, std::uint64_t value) {
  start(name, labels);
  out_ += std::to_string(value);
  out_ += '\n';
}

void Exposition::sample(std::string_view name, std::string_view labels, double value) {
  start(name, labels);
  std::array<char, 40> text{};
  (void)std::snprintf(text.data(), text.size(), "%.17g", value);
  out_ += text.data();
  out_ += '\n';
}

void Exposition::start(std::string_view name, std::string_view labels) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    out_ += labels;
    out_ += '}';
  }
  out_ += ' ';
}

std::string label(std::string_view key, std::string_view value) {
  return std::string(key) + "=\"" + std::string(value) + '"';
}

namespace {

std::string bucket_bound(double seconds) {
  std::array<char, 32> text{};
  (void)std::snprintf(text.data(), text.size(), "%g", seconds);
  return text.data();
}

}  // namespace

void DurationHistogram::observe(std::chrono::microseconds duration) noexcept {
  const double seconds = static_cast<double>(duration.count()) / 1e6;
  const auto* bucket = std::lower_bound(kDurationBuckets.begin(), kDurationBuckets.end(), seconds);
  const auto index = static_cast<std::size_t>(bucket - kDurationBuckets.begin());
  buckets_.at(index).fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, duration.count())),
                    std::memory_order_relaxed);
}

void DurationHistogram::collect(Exposition& out, const std::string& name,
                                std::string_view help) const {
  out.family(name, "histogram", help);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= kDurationBuckets.size(); ++i) {
    cumulative += buckets_.at(i).load(std::memory_order_relaxed);
    const std::string bound =
        i < kDurationBuckets.size() ? bucket_bound(kDurationBuckets.at(i)) : std::string("+Inf");
    out.sample(name + "_bucket", label("le", bound), cumulative);
  }
  out.sample(name + "_sum", "", static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6);
  // The count is the +Inf bucket's, read once, so the two always agree.
  out.sample(name + "_count", "", cumulative);
}

}  // namespace sockecho
