// sockecho: the owner of a file descriptor.
#pragma once

#include <string_view>

#include "sockecho/export.hpp"

namespace sockecho {

// Owns one file descriptor and closes it exactly once. Move-only: moving transfers ownership and
// leaves the source empty. Nothing else in sockecho calls close().
class SOCKECHO_EXPORT Fd {
 public:
  Fd() noexcept = default;
  // Takes ownership of fd; -1 means empty.
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  // The descriptor, still owned by this object; -1 when empty.
  [[nodiscard]] int get() const noexcept { return fd_; }
  // True when a descriptor is owned.
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  // Gives up ownership without closing; the caller now owns the result.
  [[nodiscard]] int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the owned descriptor (if any) and takes ownership of fd.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Writes every byte of data to a descriptor that is not a socket (stdout, a file, a pipe), looping
// over partial writes and EINTR. Throws std::system_error naming `what` on failure.
SOCKECHO_EXPORT void write_all(int fd, std::string_view data, std::string_view what);

// Puts /dev/null on each of descriptors 0, 1 and 2 that is closed, so that nothing opened later
// (a socket, say) becomes stdin, stdout or stderr, where a log line would be written into it.
// Call it first thing in main(), before any other descriptor is opened or a thread starts. The
// copies are not close-on-exec: they are the standard streams. Leaves no other descriptor open.
// Throws std::system_error if /dev/null cannot be opened.
SOCKECHO_EXPORT void ensure_standard_descriptors();

}  // namespace sockecho
