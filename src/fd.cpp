#include "sockecho/fd.hpp"

#include <fcntl.h>
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

void ensure_standard_descriptors() {
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // Every lower number is open by now (it was, or this loop filled it), and open() returns the
    // lowest free number: so this lands on fd. Not O_CLOEXEC: a standard stream stays one in
    // whatever the program runs.
    const int opened = retry_eintr([] { return ::open("/dev/null", O_RDWR); });
    if (opened < 0) throw os_error(errno, "open /dev/null");
    // Elsewhere only if another thread filled fd meanwhile: then it is no longer a hole.
    if (opened != fd) {
      const Fd extra(opened);
    }
  }
}

}  // namespace sockecho
