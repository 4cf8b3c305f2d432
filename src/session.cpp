#include <poll.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

#include "classify.hpp"
#include "sockecho/error.hpp"
#include "sockecho/line.hpp"
#include "sockecho/protocol.hpp"

namespace sockecho {

Answered Protocol::answer(Connection& /*connection*/, Workspace& /*workspace*/,
                          std::string_view /*bytes*/, bool /*at_end*/) {
  throw std::logic_error("answer() called on a protocol that declares no framing");
}

void Workspace::send(Connection& connection) {
  reply.pieces(pieces);
  if (!defer) {
    connection.write_all(pieces.data(), pieces.size());
    return;
  }
  // What the kernel takes now, without waiting; the rest is copied, once, into `unsent`. Bytes
  // of an earlier send of this answer still waiting there go first: these wait behind them.
  // (The server empties `unsent` before each answer: what an earlier client left in it, cut
  // while it was written, is not this client's.)
  Connection::Progress at;
  if (unsent.empty() && connection.write_some(pieces.data(), pieces.size(), at)) return;
  std::size_t left = 0;
  for (std::size_t i = at.index; i < pieces.size(); ++i) left += pieces[i].size();
  unsent.reserve(unsent.size() + left - at.offset);
  for (std::size_t i = at.index; i < pieces.size(); ++i) {
    unsent.append(pieces[i].substr(i == at.index ? at.offset : 0));
  }
}

namespace {

constexpr std::string_view kNewline = "\n";

// The memory of the request buffers of one protocol's connections. Each worker keeps a small
// buffer (up to kKept) of its own from connection to connection; every larger buffer is charged,
// by its capacity, to a budget shared by all of them, from the growth that makes it large until
// the memory is freed. Large buffers no longer in use are kept as spares: the next large request,
// on whichever worker, reuses one instead of faulting in fresh memory page by page. idle() frees
// them, and so does any charge to the budget (a growth, a job) that finds it spent; a protocol
// whose server never goes idle frees each at once instead.
class RequestMemory {
 public:
  // A worker keeps its own buffer up to this size from connection to connection, uncharged.
  static constexpr std::size_t kKept = std::size_t{1} << 20;

  // Throws std::bad_alloc.
  explicit RequestMemory(std::shared_ptr<MemoryBudget> budget)
      : budget_(std::move(budget)),
        reclaimer_(budget_->add_reclaimer([this] { (void)free_spares(); })) {}

  void set_kept_until_idle(bool kept) noexcept { kept_until_idle_ = kept; }

  [[nodiscard]] std::size_t charged() const noexcept { return charged_; }
  [[nodiscard]] const std::shared_ptr<MemoryBudget>& budget() const noexcept { return budget_; }
  [[nodiscard]] std::size_t limit() const noexcept { return budget_->limit(); }

  // Gives a small buffer the room of a spare, if there is one; the spare's charge goes with it.
  void take(Buffer& buffer) {
    // Most servers never see a large request: skip the lock when there is nothing to take.
    if (buffer.capacity() > kKept || count_ == 0) return;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (spares_.empty()) return;
    buffer = std::move(spares_.back());
    spares_.pop_back();
    count_ = spares_.size();
  }

  // Makes room for the next read into a full buffer that may hold up to `limit` bytes (0: no
  // limit), growing it as Connection::read_into would and charging the growth. False when the
  // budget has no room for it, even with every spare freed.
  [[nodiscard]] bool grow(Buffer& buffer, std::size_t limit) {
    if (buffer.room() > 0) return true;
    const std::size_t want = buffer.next_capacity(limit);
    const std::size_t more = charge_of(want) - charge_of(buffer.capacity());
    if (!try_charge(more)) return false;  // the spares were freed, and still no room
    try {
      buffer.reserve(want);
    } catch (...) {
      refund(more);
      throw;
    }
    return true;
  }

  // Takes a large buffer back (a small one stays with its worker, uncharged).
  void keep(Buffer& buffer) noexcept {
    if (buffer.capacity() <= kKept) return;
    if (!kept_until_idle_) {
      let_go(buffer);
      return;
    }
    buffer.clear();
    const std::lock_guard<std::mutex> lock(mutex_);
    try {
      spares_.push_back(std::move(buffer));
    } catch (...) {  // no room to keep it: let it go
      let_go(buffer);
    }
    count_ = spares_.size();
  }

  void release(const Logger& log) noexcept {
    const auto [count, bytes] = free_spares();
    if (count > 0 && log.enabled(LogLevel::verbose)) {
      try {
        log.event(LogLevel::verbose, "idle: freed " + std::to_string(count) + " spare buffers, " +
                                         std::to_string(bytes) + " bytes");
      } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory for a log line; drop it
      }
    }
  }

 private:
  static std::size_t charge_of(std::size_t capacity) noexcept {
    return capacity > kKept ? capacity : 0;
  }

  bool try_charge(std::size_t bytes) noexcept {
    if (!budget_->try_charge(bytes)) return false;
    charged_ += bytes;
    return true;
  }

  void refund(std::size_t bytes) noexcept {
    budget_->refund(bytes);
    charged_ -= bytes;
  }

  void let_go(Buffer& buffer) noexcept {
    refund(charge_of(buffer.capacity()));
    buffer.trim(kKept);
  }

  // Frees every spare; returns how many and their bytes.
  std::pair<std::size_t, std::size_t> free_spares() noexcept {
    std::vector<Buffer> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      freed.swap(spares_);
      count_ = 0;
    }
    std::size_t bytes = 0;
    for (Buffer& buffer : freed) {
      bytes += buffer.capacity();
      let_go(buffer);
    }
    return {freed.size(), bytes};
  }

  const std::shared_ptr<MemoryBudget> budget_;  // shared with whatever else charges it (jobs)
  std::atomic<std::size_t> charged_{0};         // this protocol's part of it
  std::mutex mutex_;
  std::vector<Buffer> spares_;
  std::atomic<std::size_t> count_{0};  // spares_.size(), readable without the lock
  std::atomic<bool> kept_until_idle_{false};
  // Last: it ends first, before the spares it frees.
  MemoryBudget::Reclaimer reclaimer_;
};

// Hands the workspace's buffer back to the pool however the connection ends. The reply is in the
// kernel by then, and handing it back before the server's close (which tells the client it is
// done) lets that client's next request find it.
class Borrowed {
 public:
  Borrowed(RequestMemory& memory, Buffer& buffer) : memory_(memory), buffer_(buffer) {
    memory_.take(buffer_);
    buffer_.clear();
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  Borrowed(Borrowed&&) = delete;
  Borrowed& operator=(Borrowed&&) = delete;
  ~Borrowed() { memory_.keep(buffer_); }

 private:
  RequestMemory& memory_;
  Buffer& buffer_;
};

// The echo and line protocols share the limits and the request memory.
class DocumentProtocol : public Protocol {
 public:
  explicit DocumentProtocol(Limits limits)
      : limits_(std::move(limits)),
        memory_(limits_.budget ? limits_.budget
                               : std::make_shared<MemoryBudget>(limits_.max_total_bytes)) {
    limits_.max_total_bytes = memory_.limit();
  }
  void idle_every(std::chrono::milliseconds period) noexcept override {
    memory_.set_kept_until_idle(period.count() > 0);
  }
  void idle(const Logger& log) noexcept override { memory_.release(log); }
  [[nodiscard]] std::size_t buffered_bytes() const noexcept override { return memory_.charged(); }

 protected:
  [[noreturn]] void too_large() const {
    throw ConnectionError(Outcome::too_large, detail::over_max_bytes(limits_.max_bytes));
  }
  // Makes room in the buffer for the next read, within max_total_bytes.
  void grow(Buffer& buffer, std::size_t limit) {
    if (!memory_.grow(buffer, limit)) {
      throw ConnectionError(Outcome::too_large,
                            detail::over_max_total_bytes(limits_.max_total_bytes));
    }
  }
  [[nodiscard]] std::string describe_as(std::string_view mode) const {
    return "mode=" + std::string(mode) + " max_bytes=" + std::to_string(limits_.max_bytes) +
           " max_total_bytes=" + std::to_string(limits_.max_total_bytes) +
           " request_timeout_ms=" + std::to_string(limits_.request_timeout.count());
  }
  // The end of a request that starts at `start`: Clock::time_point::max() without a limit.
  [[nodiscard]] Clock::time_point request_end(Clock::time_point start) const noexcept {
    return end_after(limits_.request_timeout, start);
  }

  template <typename Function>
  static Function checked(Function handler) {
    if (!handler) throw std::invalid_argument("handler is empty");
    return handler;
  }

  Limits limits_;
  RequestMemory memory_;
};

class EchoProtocol final : public DocumentProtocol {
 public:
  EchoProtocol(Handler handler, Limits limits)
      : DocumentProtocol(std::move(limits)), handler_(checked(std::move(handler))) {}

  void serve(Connection& connection, Workspace& workspace) override {
    const Borrowed borrowed(memory_, workspace.buffer);
    Buffer& buffer = workspace.buffer;
    // The request is the whole connection up to the half-close; the reply has the idle limit.
    connection.deadline().set_end(request_end(connection.deadline().last_progress()));
    // Never hold more than one byte past max_bytes: that byte is how "too large" is known.
    const std::size_t limit = limits_.max_bytes == 0 ? 0 : limits_.max_bytes + 1;
    do {
      if (limit != 0 && buffer.size() >= limit) too_large();
      grow(buffer, limit);
    } while (connection.read_into(buffer, limit) != 0);
    (void)answer(connection, workspace, buffer.view(), true);
  }

  [[nodiscard]] std::optional<Framing> framing() const override {
    return Framing{Framing::Unit::connection, limits_.max_bytes, limits_.request_timeout,
                   memory_.budget()};
  }

  Answered answer(Connection& connection, Workspace& workspace, std::string_view bytes,
                  bool /*at_end*/) override {
    connection.deadline().set_end(Clock::time_point::max());
    workspace.reply.clear();
    handler_(Request(bytes, connection), workspace.reply);
    if (workspace.reply.answered()) workspace.send(connection);
    return {bytes.size(), true};
  }

  [[nodiscard]] std::string describe() const override { return describe_as("echo"); }

 private:
  Handler handler_;
};

class LineProtocol final : public DocumentProtocol {
 public:
  LineProtocol(Handler handler, Limits limits, std::string greeting)
      : DocumentProtocol(std::move(limits)),
        handler_(checked(std::move(handler))),
        greeting_(std::move(greeting)) {}

  [[nodiscard]] std::optional<Framing> framing() const override {
    return Framing{Framing::Unit::line, limits_.max_bytes, limits_.request_timeout,
                   memory_.budget()};
  }

  void open(Connection& connection, Workspace& /*workspace*/) override {
    const std::array<std::string_view, 2> greeting_line = {greeting_, kNewline};
    connection.write_all(greeting_line.data(), greeting_line.size());
  }

  // The waiting room's side of serve() below: the same answers, the reading left to the server.
  Answered answer(Connection& connection, Workspace& workspace, std::string_view bytes,
                  bool at_end) override {
    LineFramer framer(limits_.max_bytes);
    workspace.reply.clear();
    while (const std::optional<std::string_view> line = framer.next(bytes)) {
      if (!answer(*line, connection, workspace)) return {bytes.size(), true};
    }
    if (!workspace.reply.empty()) workspace.send(connection);
    const std::string_view rest = bytes.substr(framer.consumed());
    if (framer.too_long(bytes.size())) too_large();
    if (at_end) {
      // A last line without '\n' is answered too.
      if (!rest.empty()) {
        workspace.reply.clear();
        if (answer(rest, connection, workspace)) workspace.send(connection);
      }
      return {bytes.size(), true};
    }
    // At the server's stop, a session ends between lines; a line begun is read to its end.
    return {framer.consumed(), rest.empty() && stopped(workspace)};
  }

  void serve(Connection& connection, Workspace& workspace) override {
    open(connection, workspace);

    const Borrowed borrowed(memory_, workspace.buffer);
    Buffer& buffer = workspace.buffer;
    LineFramer framer(limits_.max_bytes);
    // Room for a line of max_bytes and its '\n'; anything longer is known to be too large.
    const std::size_t limit = limits_.max_bytes == 0 ? 0 : limits_.max_bytes + 1;
    // The stop came while a line was begun: that line, once answered, is the last.
    bool last = false;
    for (;;) {
      // Answer every complete line now in the buffer with a single write.
      workspace.reply.clear();
      while (const std::optional<std::string_view> line = framer.next(buffer.view())) {
        if (!answer(*line, connection, workspace)) return;
      }
      const bool answered = !workspace.reply.empty();
      if (answered) workspace.send(connection);
      buffer.consume(framer.consumed());
      framer.discard();
      if (framer.too_long(buffer.size())) too_large();
      if (last && answered) return;
      if (stopped(workspace)) {
        if (buffer.empty()) return;  // between lines: nothing begun is left unanswered
        last = true;
      }
      // The request deadline runs from a line's first byte to its '\n': a line left unfinished
      // started in the last read, unless it was already unfinished before it.
      if (buffer.empty()) {
        connection.deadline().set_end(Clock::time_point::max());
      } else if (answered || connection.deadline().end() == Clock::time_point::max()) {
        connection.deadline().set_end(request_end(Clock::now()));
      }

      grow(buffer, limit);
      // Between lines, the wait for the next one ends at the server's stop.
      if (buffer.empty() && !connection.wait_readable_unless(workspace.stop_fd)) return;
      if (connection.read_into(buffer, limit) == 0) {
        if (!buffer.empty()) {  // a last line without '\n' is answered too
          workspace.reply.clear();
          if (answer(buffer.view(), connection, workspace)) workspace.send(connection);
        }
        return;
      }
    }
  }

  [[nodiscard]] std::string describe() const override { return describe_as("line"); }

 private:
  // Whether the server has stopped (its stop descriptor is readable).
  static bool stopped(const Workspace& workspace) noexcept {
    if (workspace.stop_fd < 0) return false;
    pollfd stop{workspace.stop_fd, POLLIN, 0};
    return retry_eintr([&] { return ::poll(&stop, 1, 0); }) > 0;
  }

  // Adds the line's reply to the batch: true to go on. A reply that is not ok ends the session:
  // the batch is sent up to this line, and this line's reply with it if it is an answer.
  bool answer(std::string_view line, Connection& connection, Workspace& workspace) const {
    Reply& reply = workspace.reply;
    const std::size_t before = reply.size();
    handler_(Request(line, connection), reply);
    if (reply.answered()) reply.append_ref(kNewline);
    if (reply.outcome() == Outcome::ok) return true;
    if (!reply.answered()) reply.truncate(before);
    if (!reply.empty()) workspace.send(connection);
    return false;
  }

  Handler handler_;
  std::string greeting_;
};

}  // namespace

std::shared_ptr<Protocol> echo_protocol(Handler handler, Limits limits) {
  return std::make_shared<EchoProtocol>(std::move(handler), std::move(limits));
}

std::shared_ptr<Protocol> line_protocol(Handler handler, Limits limits, std::string greeting) {
  return std::make_shared<LineProtocol>(std::move(handler), std::move(limits), std::move(greeting));
}

}  // namespace sockecho
