// What only the library may set on an Address: the credentials of a Unix-domain peer, which the
// listener reads from the kernel (SO_PEERCRED) as it accepts the connection. A public setter would
// let any caller forge the per-source key of a peer (Address::source_key()).
#pragma once

#include "sockecho/address.hpp"

namespace sockecho::detail {

struct AddressAccess {
  static void set_credentials(Address& address, const Credentials& credentials) noexcept {
    address.credentials_ = credentials;
  }
};

}  // namespace sockecho::detail
