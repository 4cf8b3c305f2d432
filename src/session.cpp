#include "sockecho/session.hpp"

#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

#include "sockecho/line.hpp"

namespace sockecho {

void Reply::append(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({nullptr, owned_.size(), bytes.size()});
  owned_.append(bytes);
  size_ += bytes.size();
}

void Reply::append_ref(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({bytes.data(), 0, bytes.size()});
  size_ += bytes.size();
}

void Reply::clear() noexcept {
  pieces_.clear();
  owned_.clear();
  size_ = 0;
}

void Reply::pieces(std::vector<std::string_view>& out) const {
  out.clear();
  for (const Piece& piece : pieces_) {
    const char* data = piece.data != nullptr ? piece.data : owned_.data() + piece.offset;
    out.emplace_back(data, piece.size);
  }
}

Handler prefix_handler(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view request, Reply& reply) {
    reply.append_ref(prefix);
    reply.append_ref(request);
  };
}

void Workspace::send(Connection& connection) {
  reply.pieces(pieces);
  connection.write_all(pieces.data(), pieces.size());
}

namespace {

constexpr std::string_view kNewline = "\n";

// Request buffers grown by large requests and not in use: the next large request, on whichever
// worker, reuses one instead of faulting in fresh memory page by page. There are never more
// than the largest number of large requests served at once, and idle() frees them; a protocol
// whose server never goes idle frees each at once instead.
class SparePool {
 public:
  // A worker keeps its own buffer up to this size from connection to connection.
  static constexpr std::size_t kKept = std::size_t{1} << 20;

  void set_kept_until_idle(bool kept) noexcept { kept_until_idle_ = kept; }

  // Gives a small buffer the room of a spare, if there is one.
  void take(Buffer& buffer) {
    // Most servers never see a large request: skip the lock when there is nothing to take.
    if (buffer.capacity() > kKept || count_ == 0) return;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (spares_.empty()) return;
    buffer = std::move(spares_.back());
    spares_.pop_back();
    count_ = spares_.size();
  }

  // Takes a large buffer back (a small one stays with its worker).
  void keep(Buffer& buffer) noexcept {
    if (buffer.capacity() <= kKept) return;
    if (!kept_until_idle_) {
      buffer.trim(kKept);
      return;
    }
    buffer.clear();
    const std::lock_guard<std::mutex> lock(mutex_);
    try {
      spares_.push_back(std::move(buffer));
    } catch (...) {  // no room to keep it: let it go
      buffer.trim(kKept);
    }
    count_ = spares_.size();
  }

  void release(const Logger& log) noexcept {
    std::size_t count = 0;
    std::size_t bytes = 0;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      count = spares_.size();
      for (const Buffer& buffer : spares_) bytes += buffer.capacity();
      spares_.clear();  // keeps the vector's own room for the next ones
      count_ = 0;
    }
    if (count > 0 && log.enabled(LogLevel::verbose)) {
      try {
        log.event(LogLevel::verbose, "idle: freed " + std::to_string(count) + " spare buffers, " +
                                         std::to_string(bytes) + " bytes");
      } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop it
      }
    }
  }

 private:
  std::mutex mutex_;
  std::vector<Buffer> spares_;
  std::atomic<std::size_t> count_{0};  // spares_.size(), readable without the lock
  std::atomic<bool> kept_until_idle_{false};
};

// Hands the workspace's buffer back to the pool however the connection ends. The reply is in the
// kernel by then, and handing it back before the server's close (which tells the client it is
// done) lets that client's next request find it.
class Borrowed {
 public:
  Borrowed(SparePool& pool, Buffer& buffer) : pool_(pool), buffer_(buffer) {
    pool_.take(buffer_);
    buffer_.clear();
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  Borrowed(Borrowed&&) = delete;
  Borrowed& operator=(Borrowed&&) = delete;
  ~Borrowed() { pool_.keep(buffer_); }

 private:
  SparePool& pool_;
  Buffer& buffer_;
};

// The two protocols of the document share the handler, the limits and the pool.
class DocumentProtocol : public Protocol {
 public:
  DocumentProtocol(Handler handler, Limits limits) : handler_(std::move(handler)), limits_(limits) {
    if (!handler_) throw std::invalid_argument("handler is empty");
  }
  void idle_every(std::chrono::milliseconds period) noexcept override {
    pool_.set_kept_until_idle(period.count() > 0);
  }
  void idle(const Logger& log) noexcept override { pool_.release(log); }

 protected:
  [[noreturn]] void too_large() const {
    throw ConnectionError(Outcome::too_large,
                          "request over " + std::to_string(limits_.max_bytes) + " bytes");
  }
  [[nodiscard]] std::string describe_as(std::string_view mode) const {
    return "mode=" + std::string(mode) + " max_bytes=" + std::to_string(limits_.max_bytes) +
           " request_timeout_ms=" + std::to_string(limits_.request_timeout.count());
  }
  // The end of a request that starts at `start`: Clock::time_point::max() without a limit.
  [[nodiscard]] Clock::time_point request_end(Clock::time_point start) const noexcept {
    return limits_.request_timeout.count() > 0 ? start + limits_.request_timeout
                                               : Clock::time_point::max();
  }

  Handler handler_;
  Limits limits_;
  SparePool pool_;
};

class EchoProtocol final : public DocumentProtocol {
 public:
  using DocumentProtocol::DocumentProtocol;

  void serve(Connection& connection, Workspace& workspace) override {
    const Borrowed borrowed(pool_, workspace.buffer);
    // The request is the whole connection up to the half-close; the reply has the idle limit.
    connection.deadline().set_end(request_end(connection.deadline().last_progress()));
    if (!connection.read_to_end(workspace.buffer, limits_.max_bytes)) too_large();
    connection.deadline().set_end(Clock::time_point::max());
    workspace.reply.clear();
    handler_(workspace.buffer.view(), workspace.reply);
    workspace.send(connection);
  }

  [[nodiscard]] std::string describe() const override { return describe_as("echo"); }
};

class LineProtocol final : public DocumentProtocol {
 public:
  LineProtocol(Handler handler, Limits limits, std::string greeting)
      : DocumentProtocol(std::move(handler), limits), greeting_(std::move(greeting)) {}

  void serve(Connection& connection, Workspace& workspace) override {
    const std::array<std::string_view, 2> greeting_line = {greeting_, kNewline};
    connection.write_all(greeting_line.data(), greeting_line.size());

    const Borrowed borrowed(pool_, workspace.buffer);
    Buffer& buffer = workspace.buffer;
    LineFramer framer(limits_.max_bytes);
    // Room for a line of max_bytes and its '\n'; anything longer is known to be too large.
    const std::size_t limit = limits_.max_bytes == 0 ? 0 : limits_.max_bytes + 1;
    for (;;) {
      // Answer every complete line now in the buffer with a single write.
      workspace.reply.clear();
      while (const std::optional<std::string_view> line = framer.next(buffer.view())) {
        answer(*line, workspace);
      }
      const bool answered = !workspace.reply.empty();
      if (answered) workspace.send(connection);
      buffer.consume(framer.consumed());
      framer.discard();
      if (framer.too_long(buffer.size())) too_large();
      // The request deadline runs from a line's first byte to its '\n': a line left unfinished
      // started in the last read, unless it was already unfinished before it.
      if (buffer.empty()) {
        connection.deadline().set_end(Clock::time_point::max());
      } else if (answered || connection.deadline().end() == Clock::time_point::max()) {
        connection.deadline().set_end(request_end(Clock::now()));
      }

      if (connection.read_into(buffer, limit) == 0) {
        if (!buffer.empty()) {  // a last line without '\n' is answered too
          workspace.reply.clear();
          answer(buffer.view(), workspace);
          workspace.send(connection);
        }
        return;
      }
    }
  }

  [[nodiscard]] std::string describe() const override { return describe_as("line"); }

 private:
  void answer(std::string_view line, Workspace& workspace) const {
    handler_(line, workspace.reply);
    workspace.reply.append_ref(kNewline);
  }

  std::string greeting_;
};

}  // namespace

std::shared_ptr<Protocol> echo_protocol(Handler handler, Limits limits) {
  return std::make_shared<EchoProtocol>(std::move(handler), limits);
}

std::shared_ptr<Protocol> line_protocol(Handler handler, Limits limits, std::string greeting) {
  return std::make_shared<LineProtocol>(std::move(handler), limits, std::move(greeting));
}

}  // namespace sockecho
