#include "sockecho/fd.hpp"

#include <unistd.h>

#include <cerrno>
#include <string>

#include "sockecho/error.hpp"

namespace sockecho {

void Fd::reset(int fd) noexcept {
  const int old = fd_;
  fd_ = fd;
  // Linux releases the descriptor even when close() reports EINTR, so it is never retried: a
  // retry could close a descriptor another thread has just been given.
  if (old >= 0) ::close(old);
}

void write_all(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    const ssize_t n = retry_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (n < 0) throw os_error(errno, "write " + std::string(what));
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace sockecho
