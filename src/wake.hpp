// sockecho (private): the wake-up that interrupt() gives a thread waiting in poll().
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "sockecho/error.hpp"
#include "sockecho/fd.hpp"

namespace sockecho::detail {

// An eventfd (close-on-exec, non-blocking) that a waiter polls beside its socket. Once
// signalled it stays readable, so it wakes every waiter in poll() now and every later one.
class Wake {
 public:
  // `name` names the socket it serves in the error: "eventfd <name>: <reason>".
  explicit Wake(const std::string& name) : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!fd_) throw os_error(errno, "eventfd " + name);
  }

  // The descriptor to poll for POLLIN.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Makes it readable. A write of 1 to an eventfd cannot block or fail here: the counter would
  // need 2^64 signals to fill.
  void signal() const noexcept {
    const std::uint64_t one = 1;
    (void)::write(fd_.get(), &one, sizeof one);
  }

 private:
  Fd fd_;
};

}  // namespace sockecho::detail
