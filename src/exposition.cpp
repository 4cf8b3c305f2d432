#include "sockecho/exposition.hpp"

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

}  // namespace sockecho
