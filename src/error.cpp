#include "sockecho/error.hpp"

#include <netdb.h>

namespace sockecho {

std::system_error os_error(int err, const std::string& what) {
  return {err, std::generic_category(), what};
}

namespace {

class ResolverCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "getaddrinfo"; }
  [[nodiscard]] std::string message(int code) const override { return ::gai_strerror(code); }
};

}  // namespace

const std::error_category& resolver_category() noexcept {
  static const ResolverCategory category;
  return category;
}

}  // namespace sockecho
