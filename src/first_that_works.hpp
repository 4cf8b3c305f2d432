// sockecho (private): trying each address resolve() gave until one works.
#pragma once

#include <exception>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "sockecho/address.hpp"

namespace sockecho::detail {

// Calls attempt(address) for each address in turn and returns what the first that does not throw
// returns; an attempt that throws std::system_error gives way to the next address (any other
// exception goes through). After each failure, go_on() says whether another address is worth
// trying (false: a deadline for all of them has passed). When none worked, the first failure is
// thrown again, as Go's Dial reports its first error.
template <typename Attempt, typename GoOn>
auto first_that_works(const std::vector<Address>& addresses, Attempt attempt, GoOn go_on)
    -> decltype(attempt(addresses.front())) {
  if (addresses.empty()) throw std::logic_error("first_that_works: no address to try");
  std::exception_ptr first_error;
  for (const Address& address : addresses) {
    try {
      return attempt(address);
    } catch (const std::system_error&) {
      if (!first_error) first_error = std::current_exception();
    }
    if (!go_on()) break;
  }
  std::rethrow_exception(first_error);
}

// The same, trying every address.
template <typename Attempt>
auto first_that_works(const std::vector<Address>& addresses, Attempt attempt)
    -> decltype(attempt(addresses.front())) {
  return first_that_works(addresses, attempt, [] { return true; });
}

}  // namespace sockecho::detail
