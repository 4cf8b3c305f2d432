#include "sockecho/spool.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <system_error>

#include "sockecho/error.hpp"
#include "sockecho/fd.hpp"

namespace sockecho {

namespace {

constexpr std::string_view kMagic{"sockecho-spool\n"};
constexpr std::size_t kHeaderBytes = kMagic.size() + 4;
constexpr std::size_t kFrameHead = 12;  // sync marker, length, checksum
// No record is larger: a length past it is damage, not a record to allocate for.
constexpr std::uint32_t kMaxRecordBytes = std::uint32_t{1} << 30;
constexpr std::string_view kSuffix{".spool"};
// How far ahead of its records the current file is zero-filled. Records then overwrite blocks
// the file already has, so a sync writes them and flushes the disk, and leaves the file's size
// and block map alone: on ext4 that spares a journal commit, measured at a quarter to a third of
// each sync under load. Refilled a MiB at a time, so the sync that carries a fill (and the file's
// new size) comes once in thousands of records.
constexpr std::uint64_t kFillBytes = std::uint64_t{1} << 20;
constexpr std::size_t kZeroChunk = std::size_t{64} << 10;
constexpr std::size_t kNameDigits = 16;

enum class Type : std::uint8_t { accepted = 1, started, next_run, ended, requeued, forgotten };

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < table.size(); ++i) {
    std::uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1U) != 0 ? (crc >> 1) ^ 0x82F63B78U : crc >> 1;
    table[i] = crc;
  }
  return table;
}
constexpr auto kCrcTable = make_crc_table();

// Appends little-endian fields to a string.
class Writer {
 public:
  void u8(std::uint8_t value) { out_.push_back(static_cast<char>(value)); }
  void u32(std::uint32_t value) {
    for (int i = 0; i < 4; ++i) u8(static_cast<std::uint8_t>(value >> (8 * i)));
  }
  void u64(std::uint64_t value) {
    for (int i = 0; i < 8; ++i) u8(static_cast<std::uint8_t>(value >> (8 * i)));
  }
  void i32(std::int32_t value) { u32(static_cast<std::uint32_t>(value)); }
  void time(SpoolTime value) { u64(static_cast<std::uint64_t>(value.time_since_epoch().count())); }
  void str(std::string_view value) {
    if (value.size() > kMaxRecordBytes) throw std::length_error("spool: a field over 1 GiB");
    u32(static_cast<std::uint32_t>(value.size()));
    out_.append(value);
  }
  std::string& out() noexcept { return out_; }

 private:
  std::string out_;
};

// Reads little-endian fields from bytes; past the end, or on any field that does not fit, it
// fails (ok() false) and returns zeros from then on, never reading outside `in`.
class Reader {
 public:
  explicit Reader(std::string_view in) noexcept : in_(in) {}
  std::uint8_t u8() noexcept {
    if (!take(1)) return 0;
    return static_cast<std::uint8_t>(last_[0]);
  }
  std::uint32_t u32() noexcept {
    if (!take(4)) return 0;
    std::uint32_t value = 0;
    for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(last_[i]);
    return value;
  }
  std::uint64_t u64() noexcept {
    if (!take(8)) return 0;
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(last_[i]);
    return value;
  }
  std::int32_t i32() noexcept { return static_cast<std::int32_t>(u32()); }
  SpoolTime time() noexcept {
    return SpoolTime(std::chrono::milliseconds(static_cast<std::int64_t>(u64())));
  }
  std::string str() {
    const std::uint32_t size = u32();
    if (!take(size)) return {};
    return std::string(last_);
  }
  std::vector<std::string> strings() {
    const std::uint32_t count = u32();
    // Each string takes 4 bytes at least: a count larger than that is damage.
    if (count > in_.size() / 4) ok_ = false;
    std::vector<std::string> out;
    if (!ok_) return out;
    out.reserve(count);
    for (std::uint32_t i = 0; i < count && ok_; ++i) out.push_back(str());
    return out;
  }
  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] bool finished() const noexcept { return ok_ && in_.empty(); }

 private:
  bool take(std::size_t size) noexcept {
    if (!ok_ || in_.size() < size) {
      ok_ = false;
      last_ = {};
      return false;
    }
    last_ = in_.substr(0, size);
    in_.remove_prefix(size);
    return true;
  }
  std::string_view in_;
  std::string_view last_;
  bool ok_ = true;
};

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <typename... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// The type byte and payload of a record. `order` is the spool's own acceptance sequence, kept in
// an `accepted` record so that a job re-written into a later file keeps its place.
std::string encode_body(const SpoolRecord& record, std::uint64_t order) {
  Writer w;
  std::visit(Overloaded{
                 [&](const SpoolAccepted& r) {
                   w.u8(static_cast<std::uint8_t>(Type::accepted));
                   w.u64(order);
                   w.str(r.id);
                   w.str(r.request);
                   w.u32(static_cast<std::uint32_t>(r.env.size()));
                   for (const auto& variable : r.env) w.str(variable);
                   w.str(r.source);
                   w.time(r.time);
                 },
                 [&](const SpoolStarted& r) {
                   w.u8(static_cast<std::uint8_t>(Type::started));
                   w.str(r.id);
                   w.u32(r.attempt);
                   w.time(r.time);
                 },
                 [&](const SpoolNextRun& r) {
                   w.u8(static_cast<std::uint8_t>(Type::next_run));
                   w.str(r.id);
                   w.time(r.time);
                 },
                 [&](const SpoolEnded& r) {
                   w.u8(static_cast<std::uint8_t>(Type::ended));
                   w.str(r.id);
                   w.u8(static_cast<std::uint8_t>(r.state));
                   w.i32(r.exit_code);
                   w.i32(r.signal);
                   w.str(r.reason);
                   w.u64(r.stdout_bytes);
                   w.u64(r.stderr_bytes);
                   w.str(r.output);
                   w.time(r.time);
                 },
                 [&](const SpoolRequeued& r) {
                   w.u8(static_cast<std::uint8_t>(Type::requeued));
                   w.str(r.id);
                   w.time(r.time);
                 },
                 [&](const SpoolForgotten& r) {
                   w.u8(static_cast<std::uint8_t>(Type::forgotten));
                   w.str(r.id);
                 },
             },
             record);
  return std::move(w.out());
}

struct Decoded {
  SpoolRecord record;
  std::uint64_t order = 0;
};

std::optional<Decoded> decode_body(std::string_view body) {
  Reader r(body);
  Decoded out{SpoolForgotten{}, 0};
  switch (static_cast<Type>(r.u8())) {
    case Type::accepted: {
      SpoolAccepted a;
      out.order = r.u64();
      a.id = r.str();
      a.request = r.str();
      a.env = r.strings();
      a.source = r.str();
      a.time = r.time();
      out.record = std::move(a);
      break;
    }
    case Type::started: {
      SpoolStarted s;
      s.id = r.str();
      s.attempt = r.u32();
      s.time = r.time();
      out.record = std::move(s);
      break;
    }
    case Type::next_run: {
      SpoolNextRun n;
      n.id = r.str();
      n.time = r.time();
      out.record = std::move(n);
      break;
    }
    case Type::ended: {
      SpoolEnded e;
      e.id = r.str();
      const std::uint8_t state = r.u8();
      if (state > static_cast<std::uint8_t>(SpoolEnd::cancelled)) return std::nullopt;
      e.state = static_cast<SpoolEnd>(state);
      e.exit_code = r.i32();
      e.signal = r.i32();
      e.reason = r.str();
      e.stdout_bytes = r.u64();
      e.stderr_bytes = r.u64();
      e.output = r.str();
      e.time = r.time();
      out.record = std::move(e);
      break;
    }
    case Type::requeued: {
      SpoolRequeued q;
      q.id = r.str();
      q.time = r.time();
      out.record = std::move(q);
      break;
    }
    case Type::forgotten: {
      SpoolForgotten f;
      f.id = r.str();
      out.record = std::move(f);
      break;
    }
    default:
      return std::nullopt;
  }
  if (!r.finished()) return std::nullopt;
  return out;
}

std::string encode_frame(const SpoolRecord& record, std::uint64_t order) {
  const std::string body = encode_body(record, order);
  if (body.size() > kMaxRecordBytes) throw std::length_error("spool: a record over 1 GiB");
  Writer w;
  w.u32(kSpoolSyncMarker);
  w.u32(static_cast<std::uint32_t>(body.size()));
  w.u32(crc32c(body));
  w.out().append(body);
  return std::move(w.out());
}

enum class Scan { ok, cut, bad };

// The record whose frame starts at `pos` of `data`: ok with `size` its frame's length, cut when
// the data ends before the frame does, bad for anything else that does not check.
Scan scan_frame(std::string_view data, std::size_t pos, std::optional<Decoded>& out,
                std::size_t& size) {
  if (data.size() - pos < kFrameHead) return Scan::cut;
  Reader head(data.substr(pos, kFrameHead));
  const std::uint32_t marker = head.u32();
  const std::uint32_t length = head.u32();
  const std::uint32_t checksum = head.u32();
  if (marker != kSpoolSyncMarker || length == 0 || length > kMaxRecordBytes) return Scan::bad;
  if (data.size() - pos - kFrameHead < length) return Scan::cut;
  const std::string_view body = data.substr(pos + kFrameHead, length);
  if (crc32c(body) != checksum) return Scan::bad;
  out = decode_body(body);
  if (!out) return Scan::bad;
  size = kFrameHead + length;
  return Scan::ok;
}

// Whether the bytes from `pos` to `zeros` (where the zero fill begins) are the start of a frame
// whose write a crash cut short, the rest of it still the fill's zeros: its marker (or as much
// of it as there is), and a length that runs past them.
bool cut_into_fill(std::string_view data, std::size_t pos, std::size_t zeros,
                   std::string_view marker) {
  const std::size_t written = zeros - pos;
  if (written < marker.size()) return data.substr(pos, written) == marker.substr(0, written);
  if (data.substr(pos, marker.size()) != marker) return false;
  if (data.size() - pos < 8) return true;
  Reader head(data.substr(pos + marker.size(), 4));
  return kFrameHead + std::uint64_t{head.u32()} > written;
}

std::string file_name(std::uint64_t number) {
  std::array<char, kNameDigits + 1> digits{};
  static constexpr std::string_view kHex{"0123456789abcdef"};
  for (std::size_t i = 0; i < kNameDigits; ++i) {
    digits.at(kNameDigits - 1 - i) = kHex[(number >> (4 * i)) & 0xFU];
  }
  return std::string(digits.data(), kNameDigits) + std::string(kSuffix);
}

// The number a spool file's name carries, or nullopt for a name that is no spool file's.
std::optional<std::uint64_t> file_number(std::string_view name) {
  if (name.size() != kNameDigits + kSuffix.size() || name.substr(kNameDigits) != kSuffix) {
    return std::nullopt;
  }
  std::uint64_t number = 0;
  for (std::size_t i = 0; i < kNameDigits; ++i) {
    const char c = name[i];
    std::uint64_t digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<std::uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<std::uint64_t>(c - 'a') + 10;
    } else {
      return std::nullopt;
    }
    number = (number << 4) | digit;
  }
  return number;
}

SpoolError spool_error(int err, const std::string& what) {
  return SpoolError{os_error(err, what).what()};
}

// A count that threads sleep on until it moves: a futex. C++17 has no atomic wait, and a
// condition variable would have every thread it wakes take its mutex in turn before going on.
class Bell {
 public:
  // The count now; read under the lock that orders rings, so that wait() misses none.
  [[nodiscard]] std::uint32_t count() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }
  // Moves the count; under that lock. Wakes no one yet: wake() does, after the lock is let go.
  void ring() noexcept { count_.fetch_add(1, std::memory_order_release); }
  // Returns once the count is no longer `seen` (or at once, or spuriously: callers check).
  void wait(std::uint32_t seen, const std::string& what) {
    if (::syscall(SYS_futex, &count_, FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0) != 0 &&
        errno != EAGAIN && errno != EINTR) {
      throw spool_error(errno, "spool: futex wait (" + what + ")");
    }
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  void wake(const std::string& what) {
    if (::syscall(SYS_futex, &count_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0) < 0) {
      throw spool_error(errno, "spool: futex wake (" + what + ")");
    }
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  std::atomic<std::uint32_t> count_{0};
};

std::string read_file(const std::string& path) {
  const Fd fd(retry_eintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd) throw spool_error(errno, "spool: open " + path);
  std::string data;
  std::array<char, 65536> chunk{};
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd.get(), chunk.data(), chunk.size()); });
    if (n < 0) throw spool_error(errno, "spool: read " + path);
    if (n == 0) return data;
    data.append(chunk.data(), static_cast<std::size_t>(n));
  }
}

// A job as the spool holds it: its state, and where its records are (since its latest
// `accepted`): bytes per file.
struct LiveJob {
  SpooledJob job;
  std::uint64_t order = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> in_files;
  // Files that may still hold its records from before its latest `accepted` (it was re-written
  // forward): they count for nothing, but its `forgotten` must outlive them, or a replay would
  // find those records and bring it back.
  std::vector<std::uint64_t> stale;
};

struct FileInfo {
  std::uint64_t size = 0;
  std::uint64_t live_bytes = 0;  // bytes of live jobs' records
  std::size_t jobs = 0;          // live jobs with records here
  // `forgotten` records here that retire a job's records in an earlier file: this file must
  // outlive that one, or the job would come back.
  std::vector<std::pair<std::uint64_t, std::string>> holds;
  bool abandoned = false;  // a write or sync failed: its live jobs are re-written forward
};

// A change to a job, other than its acceptance and its end in the spool.
void change(SpooledJob& job, const SpoolRecord& record) {
  std::visit(Overloaded{
                 [](const SpoolAccepted&) {},
                 [&](const SpoolStarted& r) {
                   if (job.attempts == 0) job.first_started = r.time;
                   ++job.attempts;
                   job.running = true;
                   job.started = r.time;
                   job.next_run.reset();
                   job.end.reset();
                 },
                 [&](const SpoolNextRun& r) {
                   job.running = false;
                   job.next_run = r.time;
                 },
                 [&](const SpoolEnded& r) {
                   job.running = false;
                   job.next_run.reset();
                   job.end = r;
                 },
                 [&](const SpoolRequeued& r) {
                   job.attempts = 0;
                   job.running = false;
                   job.started.reset();
                   job.first_started.reset();
                   job.next_run.reset();
                   job.end.reset();
                   job.requeued = r.time;
                 },
                 [](const SpoolForgotten&) {},
             },
             record);
}

// Records that fold into `job` as it is: what compaction writes.
std::vector<SpoolRecord> state_records(const SpooledJob& job) {
  std::vector<SpoolRecord> out;
  out.emplace_back(SpoolAccepted{job.id, job.request, job.env, job.source, job.accepted});
  if (job.requeued) out.emplace_back(SpoolRequeued{job.id, *job.requeued});
  for (unsigned attempt = 1; attempt <= job.attempts; ++attempt) {
    // The first start and the latest are what a job's status tells; the ones between are
    // counted only.
    const std::optional<SpoolTime>& time = attempt == 1 ? job.first_started : job.started;
    out.emplace_back(SpoolStarted{job.id, attempt, time.value_or(job.accepted)});
  }
  if (job.end) out.emplace_back(*job.end);
  if (job.next_run) out.emplace_back(SpoolNextRun{job.id, *job.next_run});
  return out;
}

}  // namespace

bool SpoolAccepted::operator==(const SpoolAccepted& o) const {
  return id == o.id && request == o.request && env == o.env && source == o.source && time == o.time;
}
bool SpoolStarted::operator==(const SpoolStarted& o) const {
  return id == o.id && attempt == o.attempt && time == o.time;
}
bool SpoolNextRun::operator==(const SpoolNextRun& o) const { return id == o.id && time == o.time; }
bool SpoolEnded::operator==(const SpoolEnded& o) const {
  return id == o.id && state == o.state && exit_code == o.exit_code && signal == o.signal &&
         reason == o.reason && stdout_bytes == o.stdout_bytes && stderr_bytes == o.stderr_bytes &&
         output == o.output && time == o.time;
}
bool SpoolRequeued::operator==(const SpoolRequeued& o) const {
  return id == o.id && time == o.time;
}
bool SpoolForgotten::operator==(const SpoolForgotten& o) const { return id == o.id; }
bool SpooledJob::operator==(const SpooledJob& o) const {
  return id == o.id && request == o.request && env == o.env && source == o.source &&
         accepted == o.accepted && requeued == o.requeued && attempts == o.attempts &&
         running == o.running && started == o.started && next_run == o.next_run && end == o.end &&
         first_started == o.first_started;
}

const std::string& record_id(const SpoolRecord& record) {
  return std::visit([](const auto& r) -> const std::string& { return r.id; }, record);
}

std::uint32_t crc32c(std::string_view data) noexcept {
  std::uint32_t crc = 0xFFFFFFFFU;
  for (const char c : data) {
    crc = kCrcTable.at((crc ^ static_cast<std::uint8_t>(c)) & 0xFFU) ^ (crc >> 8);
  }
  return crc ^ 0xFFFFFFFFU;
}

std::string encode_record(const SpoolRecord& record) { return encode_frame(record, 0); }

std::optional<SpoolRecord> decode_record(std::string_view frame) {
  std::optional<Decoded> decoded;
  std::size_t size = 0;
  if (scan_frame(frame, 0, decoded, size) != Scan::ok || size != frame.size()) {
    return std::nullopt;
  }
  return std::move(decoded->record);
}

struct Spool::State {
  std::string dir;
  SpoolOptions options;
  Fd dir_fd;  // holds the flock
  SpoolReport report;
  std::vector<SpooledJob> replayed;

  mutable std::mutex mutex;
  // A sync in wait() returned: for a sync under the lock (rotation, compaction) waiting its turn.
  std::condition_variable resolved;
  std::map<std::uint64_t, FileInfo> files;
  std::map<std::string, LiveJob> jobs;
  std::map<std::uint64_t, std::string> by_order;
  std::uint64_t next_order = 1;
  std::uint64_t next_file = 1;

  // The file appended to, shared with a sync under way outside the lock.
  std::shared_ptr<Fd> current;
  std::uint64_t current_number = 0;
  std::uint64_t position = 0;    // where its next record goes: the end of its records
  bool filling = false;          // it is zero-filled ahead of its records (until a fill fails)
  std::uint64_t synced_end = 0;  // in it: every record before this offset is durable
  std::uint64_t written = 0;     // sequence of the latest record written
  std::uint64_t durable = 0;     // every record up to it is durable, or failed
  std::vector<std::pair<std::uint64_t, std::uint64_t>> failed;  // ranges of records
  std::string failure;                                          // why, the latest
  // Records appended and not yet durable whose failure takes a job out: its `accepted`.
  std::vector<std::pair<std::uint64_t, std::string>> pending_accepts;
  // Jobs whose acceptance failed, by the file it may still be in: forgotten in the next file.
  std::vector<std::pair<std::uint64_t, std::string>> to_forget;
  bool syncing = false;          // a wait() is syncing, outside the lock
  std::uint64_t covering = 0;    // the latest record that sync covers
  std::uint64_t sync_round = 0;  // syncs begun by wait(): the one under way, while `syncing`
  // The sync (its round) after which a waiter whose record it does not cover begins the next
  // one, woken by `handoff` before the others are: so the disk is left idle for no round trip
  // of every waiter through the lock. 0: none yet; the others not covered wait for that next.
  std::uint64_t claimed_round = 0;
  std::size_t lockers = 0;  // syncs under the lock waiting for the one under way to return

  // What waiters read without the lock. A waiter sleeps on the bell of the sync that will cover
  // its record (bells[sync_round % 2]; the next sync's is the other one), so a returning sync wakes
  // only the waiters it covers, and they return without taking the lock: every waiter taking
  // it in turn after each sync was most of an acknowledgement's delay under load. Bells are rung
  // (incremented) under the lock, so a waiter that read one under the lock misses no ring.
  std::atomic<std::uint64_t> settled{0};         // `durable`, published
  std::atomic<std::uint64_t> failed_through{0};  // the latest record of any failed range
  std::array<Bell, 2> bells;
  Bell handoff;
  std::uint64_t syncs = 0;

  [[nodiscard]] std::string path(std::uint64_t number) const {
    return dir + "/" + file_name(number);
  }

  void charge(LiveJob& live, std::uint64_t file, std::uint64_t bytes) {
    FileInfo& info = files[file];
    info.live_bytes += bytes;
    auto it = std::find_if(live.in_files.begin(), live.in_files.end(),
                           [&](const auto& entry) { return entry.first == file; });
    if (it == live.in_files.end()) {
      live.in_files.emplace_back(file, bytes);
      ++info.jobs;
    } else {
      it->second += bytes;
    }
  }

  // Takes a job's records out of the files' live counts; the files become stale for it.
  void release(LiveJob& live) {
    live.stale.erase(std::remove_if(live.stale.begin(), live.stale.end(),
                                    [&](std::uint64_t file) { return files.count(file) == 0; }),
                     live.stale.end());
    for (const auto& [file, bytes] : live.in_files) {
      auto it = files.find(file);
      if (it == files.end()) continue;
      it->second.live_bytes -= bytes;
      --it->second.jobs;
      if (std::find(live.stale.begin(), live.stale.end(), file) == live.stale.end()) {
        live.stale.push_back(file);
      }
    }
    live.in_files.clear();
  }

  // Folds one record found in (or written to) `file`. Replaying, an `accepted` for a job already
  // known is its state re-written forward, which replaces what came before.
  void fold(const SpoolRecord& record, std::uint64_t order, std::uint64_t file,
            std::uint64_t bytes) {
    const std::string& id = record_id(record);
    auto it = jobs.find(id);
    if (const auto* accepted = std::get_if<SpoolAccepted>(&record)) {
      if (it != jobs.end()) {
        release(it->second);
        by_order.erase(it->second.order);
      } else {
        it = jobs.emplace(id, LiveJob{}).first;
      }
      LiveJob& live = it->second;
      live.job = SpooledJob{};
      live.job.id = accepted->id;
      live.job.request = accepted->request;
      live.job.env = accepted->env;
      live.job.source = accepted->source;
      live.job.accepted = accepted->time;
      live.order = order;
      by_order[order] = id;
      next_order = std::max(next_order, order + 1);
      charge(live, file, bytes);
      return;
    }
    if (it == jobs.end()) return;  // its acceptance was lost or forgotten: nothing to change
    if (std::holds_alternative<SpoolForgotten>(record)) {
      forget(it, file);
      return;
    }
    change(it->second.job, record);
    charge(it->second, file, bytes);
  }

  void forget(std::map<std::string, LiveJob>::iterator it, std::uint64_t file) {
    release(it->second);
    for (const std::uint64_t old : it->second.stale) {
      if (old != file && files.count(old) != 0) files[file].holds.emplace_back(old, it->first);
    }
    by_order.erase(it->second.order);
    jobs.erase(it);
  }

  void replay_file(std::uint64_t number) {
    const std::string name = file_name(number);
    const std::string file_path = path(number);
    const std::string data = read_file(file_path);
    FileInfo& info = files[number];
    info.size = data.size();
    ++report.files;
    if (data.size() < kHeaderBytes) {
      // A file cut while its header was written holds no record; anything else is no spool
      // file of ours.
      if (kMagic.substr(0, std::min(data.size(), kMagic.size())) ==
          std::string_view(data).substr(0, std::min(data.size(), kMagic.size()))) {
        ++report.torn;
        report.places.push_back({name, 0, true});
        return;
      }
      throw SpoolVersionError("spool: " + file_path + ": not a spool file", file_path);
    }
    if (std::string_view(data).substr(0, kMagic.size()) != kMagic) {
      throw SpoolVersionError("spool: " + file_path + ": not a spool file", file_path);
    }
    Reader head(std::string_view(data).substr(kMagic.size(), 4));
    const std::uint32_t version = head.u32();
    if (version != kSpoolVersion) {
      throw SpoolVersionError("spool: " + file_path + ": format version " +
                                  std::to_string(version) + ", this sockecho reads version " +
                                  std::to_string(kSpoolVersion),
                              file_path);
    }
    const std::string_view marker{"\xD3\x5C\x0E\xC5", 4};
    // Past the last byte that is not zero: the zero fill ahead of the records, no damage. (A
    // record may end in zeros itself: it is read whole, from the data, not cut here.)
    const std::size_t zeros = data.find_last_not_of('\0') + 1;
    std::size_t pos = kHeaderBytes;
    while (pos < data.size() && pos < zeros) {
      std::optional<Decoded> decoded;
      std::size_t size = 0;
      const Scan scan = scan_frame(data, pos, decoded, size);
      if (scan == Scan::ok) {
        ++report.records;
        fold(decoded->record, decoded->order, number, size);
        pos += size;
        continue;
      }
      // Skip to the next sync marker whose record checks; none: the rest is lost.
      std::size_t next = pos + 1;
      for (; (next = data.find(marker, next)) != std::string::npos; ++next) {
        std::optional<Decoded> ignored;
        std::size_t ignored_size = 0;
        if (scan_frame(data, next, ignored, ignored_size) == Scan::ok) break;
      }
      const bool torn = next == std::string::npos &&
                        (scan == Scan::cut || cut_into_fill(data, pos, zeros, marker));
      ++(torn ? report.torn : report.damaged);
      report.places.push_back({name, pos, torn});
      if (next == std::string::npos) break;
      pos = next;
    }
  }

  // Every record up to `written` durable, with the lock held all along (rotation, compaction).
  void sync_locked(std::unique_lock<std::mutex>& lock) {
    // While it waits, no waiter begins another sync: this one covers them all.
    ++lockers;
    resolved.wait(lock, [&] { return !syncing; });
    --lockers;
    if (!current || durable >= written) return;
    const std::uint64_t target = written;
    const std::uint64_t end = position;
    const int rc = retry_eintr([&] { return ::fdatasync(current->get()); });
    const int err = errno;
    ++syncs;
    if (rc != 0) {
      fail(err, "fdatasync " + path(current_number));
      throw SpoolError(failure);
    }
    synced_end = std::max(synced_end, end);
    settle(target);
    ring_all();
  }

  // The waiters' view of `durable` (and of the failed ranges, which change before it).
  void settle(std::uint64_t target) {
    durable = std::max(durable, target);
    pending_accepts.erase(std::remove_if(pending_accepts.begin(), pending_accepts.end(),
                                         [&](const auto& entry) { return entry.first <= durable; }),
                          pending_accepts.end());
    settled.store(durable, std::memory_order_release);
  }

  // Wakes every waiter, whichever sync it waits for: for the rare moves of `durable` other than
  // a sync of wait()'s returning (a failure, a sync under the lock). Under the lock.
  void ring_all() {
    for (auto& bell : bells) {
      bell.ring();
      bell.wake(dir);
    }
    handoff.ring();
    handoff.wake(dir);
  }

  // The sync of wait(): every record written so far, outside the lock (the lock is let go on
  // return). Other appends go on meanwhile; a waiter whose record it does not cover begins the
  // next as soon as it returns.
  void lead(std::unique_lock<std::mutex>& lock) {
    const std::uint64_t target = written;
    const std::uint64_t end = position;
    const std::shared_ptr<Fd> file = current;
    const std::uint64_t number = current_number;
    if (!file) {  // never: a record is durable or failed before its file is let go
      settle(target);
      ring_all();
      lock.unlock();
      return;
    }
    syncing = true;
    covering = target;
    const std::uint64_t mine = ++sync_round;
    lock.unlock();
    const int rc = retry_eintr([&] { return ::fdatasync(file->get()); });
    const int err = errno;
    lock.lock();
    syncing = false;
    ++syncs;
    if (rc == 0) {
      if (number == current_number) synced_end = std::max(synced_end, end);
      settle(target);
    } else if (number == current_number) {
      fail(err, "fdatasync " + path(number));
    }
    // (A file abandoned meanwhile had its records failed then: nothing to settle.)
    Bell& bell = bells.at(mine % 2);
    bell.ring();
    const bool next = claimed_round == mine;
    if (next) handoff.ring();
    resolved.notify_all();
    lock.unlock();
    // The next leader first, then the waiters this sync covered.
    if (next) handoff.wake(dir);
    bell.wake(dir);
  }

  // A write or sync of the current file failed: every record in it not yet durable is failed,
  // the file abandoned, and the next record starts a new one. The failed records are cut from
  // the file before anyone hears of the failure, so a job refused is never found at the next
  // start, even when nothing is appended after (a `forgotten` in the next file is the way when
  // the cut fails, as it may on a disk gone bad).
  void fail(int err, const std::string& what) {
    failure = std::string("spool: ") + os_error(err, what).what();
    if (written > durable) {
      failed.emplace_back(durable + 1, written);
      failed_through.store(written, std::memory_order_release);
    }
    const bool cut = cut_after_synced();
    for (const auto& [sequence, id] : pending_accepts) {
      auto it = jobs.find(id);
      if (it == jobs.end()) continue;
      if (!cut) to_forget.emplace_back(current_number, id);
      release(it->second);
      by_order.erase(it->second.order);
      jobs.erase(it);
    }
    pending_accepts.clear();
    settle(written);
    files[current_number].abandoned = true;
    current.reset();
    current_number = 0;
    ring_all();
  }

  // Truncates the current file to its synced records and syncs that: whether it took.
  bool cut_after_synced() {
    FileInfo& info = files[current_number];
    if (retry_eintr([&] { return ::ftruncate(current->get(), static_cast<off_t>(synced_end)); }) !=
        0) {
      return false;
    }
    info.size = synced_end;
    ++syncs;
    return retry_eintr([&] { return ::fdatasync(current->get()); }) == 0;
  }

  [[nodiscard]] bool is_failed(std::uint64_t sequence) const {
    return std::any_of(failed.begin(), failed.end(), [&](const auto& range) {
      return sequence >= range.first && sequence <= range.second;
    });
  }

  // Writes one frame into the current file with one write() (more only for a partial one).
  void write_frame(const std::string& frame) {
    fill(frame.size());
    FileInfo& info = files[current_number];
    std::string_view rest = frame;
    while (!rest.empty()) {
      const ssize_t n =
          retry_eintr([&] { return ::write(current->get(), rest.data(), rest.size()); });
      if (n < 0) {
        const int err = errno;
        // What was written of the frame is on disk, until fail() cuts it.
        position += frame.size() - rest.size();
        info.size = std::max(info.size, position);
        fail(err, "write " + path(current_number));
        throw SpoolError(failure);
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    position += frame.size();
    info.size = std::max(info.size, position);
    ++written;
  }

  // Zero-fills the current file up to kFillBytes past a record of `bytes` about to be written,
  // when that record would pass the fill, never past max_file_bytes (where the file is full).
  // A fill that fails (a full disk, a size limit) is no failure of any record: what it wrote is
  // given back (the zeros were all it held) and the file is appended to as it is from then on,
  // so a record's own write says whether it fits, as it did before there was a fill.
  void fill(std::uint64_t bytes) {
    FileInfo& info = files[current_number];
    if (!filling || position + bytes <= info.size) return;
    const std::uint64_t end = std::min(position + bytes + kFillBytes, options.max_file_bytes);
    static const std::string kZeros(kZeroChunk, '\0');
    while (info.size < end) {
      const std::size_t chunk =
          static_cast<std::size_t>(std::min<std::uint64_t>(end - info.size, kZeros.size()));
      const ssize_t n = retry_eintr([&] {
        return ::pwrite(current->get(), kZeros.data(), chunk, static_cast<off_t>(info.size));
      });
      if (n <= 0) {
        filling = false;
        // Should this fail too, the zeros stay: a reader passes them, and they are counted.
        if (retry_eintr(
                [&] { return ::ftruncate(current->get(), static_cast<off_t>(position)); }) == 0) {
          info.size = position;
        }
        return;
      }
      info.size += static_cast<std::uint64_t>(n);
    }
  }

  // A new file: header written, the file and the directory synced, before any record in it.
  void start_file() {
    const std::uint64_t number = next_file++;
    const std::string file_path = path(number);
    Fd fd(retry_eintr(
        [&] { return ::open(file_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600); }));
    if (!fd) throw spool_error(errno, "spool: open " + file_path);
    Writer header;
    header.out().append(kMagic);
    header.u32(kSpoolVersion);
    try {
      write_all(fd.get(), header.out(), file_path);
      ++syncs;
      if (retry_eintr([&] { return ::fdatasync(fd.get()); }) != 0) {
        throw os_error(errno, "fdatasync " + file_path);
      }
      ++syncs;
      if (retry_eintr([&] { return ::fsync(dir_fd.get()); }) != 0) {
        throw os_error(errno, "fsync " + dir);
      }
    } catch (const std::system_error& e) {
      // It holds no record: nothing is lost by removing it.
      ::unlink(file_path.c_str());
      throw SpoolError(std::string("spool: ") + e.what());
    }
    files[number].size = header.out().size();
    current = std::make_shared<Fd>(std::move(fd));
    current_number = number;
    position = header.out().size();
    synced_end = position;
    filling = true;
  }

  // A file to append to: the current one, or a new one when there is none or it is full (the
  // old one synced first, so that every record before the new file is durable or failed).
  void ensure_file(std::unique_lock<std::mutex>& lock) {
    // A sync lets the lock go, and another thread's failure may take the file meanwhile: so a
    // few rounds, each ending with a file or an error.
    for (int round = 0; round < 3; ++round) {
      if (current && position < options.max_file_bytes) return;
      if (current) {
        const std::uint64_t full = current_number;
        try {
          sync_locked(lock);
        } catch (const SpoolError&) {
          // Its records are failed and it is abandoned; this record goes to a new file.
        }
        // Another append started a new file while this one waited for the sync.
        if (current && current_number != full) continue;
        // Every record written is durable or failed by now: nothing is left behind.
        current.reset();
        current_number = 0;
      }
      start_file();
      try {
        maintain(lock);
      } catch (const SpoolError&) {
        // A file that failed leaves no file to append to: this record fails too. A deletion
        // that failed costs only space, and is tried again.
        if (!current) throw;
      }
    }
    if (!current) throw SpoolError(failure.empty() ? "spool: no file to append to" : failure);
  }

  // Whether the files hold more than the documented bound allows, so compaction is due.
  [[nodiscard]] bool over_bound() const {
    std::uint64_t total = 0;
    std::uint64_t live = 0;
    for (const auto& [number, info] : files) {
      total += info.size;
      live += info.live_bytes;
    }
    return total > 2 * live + options.max_file_bytes;
  }

  // Writes a `forgotten` record of the spool's own into the current file, holding `file`.
  void write_forgotten(std::uint64_t file, std::string id) {
    write_frame(encode_frame(SpoolForgotten{id}, 0));
    if (files.count(file) != 0) files[current_number].holds.emplace_back(file, std::move(id));
  }

  // Whether a file's live records are few enough to move forward.
  [[nodiscard]] bool sparse(std::uint64_t number, const FileInfo& info) const {
    if (number == current_number || (info.jobs == 0 && info.holds.empty())) return false;
    return info.abandoned || info.live_bytes * 2 < info.size;
  }

  // Re-writes sparse (and abandoned) files' live jobs and holds into the current file, syncs,
  // then deletes every file no live job needs.
  void maintain(std::unique_lock<std::mutex>& lock) {
    bool wrote = false;
    if (!to_forget.empty()) {
      if (!current) start_file();
      while (!to_forget.empty()) {
        write_forgotten(to_forget.back().first, to_forget.back().second);
        to_forget.pop_back();
      }
      wrote = true;
    }
    // Moving a file's jobs takes them out of other files too, which may leave those sparse in
    // turn: again, until none is. Each file moves once at most (it is left with no job).
    for (std::size_t round = 0, limit = files.size() + 1; round < limit; ++round) {
      std::vector<std::uint64_t> moving;
      for (const auto& [number, info] : files) {
        if (sparse(number, info)) moving.push_back(number);
      }
      if (moving.empty()) break;
      if (!current) start_file();
      for (const std::uint64_t number : moving) move_forward(number);
      wrote = true;
    }
    if (wrote) sync_locked(lock);
    delete_unneeded();
  }

  // Re-writes the current state of every live job with records in file `number`, and the
  // `forgotten` records it holds, into the current file.
  void move_forward(std::uint64_t number) {
    std::vector<std::string> ids;
    for (const auto& [id, live] : jobs) {
      if (std::any_of(live.in_files.begin(), live.in_files.end(),
                      [&](const auto& entry) { return entry.first == number; })) {
        ids.push_back(id);
      }
    }
    for (const auto& id : ids) {
      // Charged to the current file only once all of it is written: a failure half-way leaves
      // the job where its records still are whole.
      LiveJob& live = jobs.at(id);
      std::uint64_t bytes = 0;
      for (const auto& record : state_records(live.job)) {
        const std::string frame = encode_frame(record, live.order);
        write_frame(frame);
        bytes += frame.size();
      }
      release(live);
      charge(live, current_number, bytes);
    }
    auto& holds = files[number].holds;
    while (!holds.empty()) {
      write_forgotten(holds.back().first, holds.back().second);
      holds.pop_back();
    }
  }

  void delete_unneeded() {
    // Each round deletes what nothing needs, then what only the deleted files' holds kept.
    for (std::size_t round = 0, limit = files.size() + 1; round < limit; ++round) {
      std::vector<std::uint64_t> gone;
      for (const auto& [number, info] : files) {
        if (number != current_number && info.jobs == 0 && info.holds.empty()) {
          gone.push_back(number);
        }
      }
      if (gone.empty()) return;
      for (const std::uint64_t number : gone) {
        const std::string file_path = path(number);
        if (::unlink(file_path.c_str()) != 0 && errno != ENOENT) {
          throw spool_error(errno, "spool: unlink " + file_path);
        }
        files.erase(number);
      }
      // The deletions reach the disk before what they free is deleted in turn.
      ++syncs;
      if (retry_eintr([&] { return ::fsync(dir_fd.get()); }) != 0) {
        throw spool_error(errno, "spool: fsync " + dir);
      }
      for (auto& [number, info] : files) {
        info.holds.erase(std::remove_if(info.holds.begin(), info.holds.end(),
                                        [&](const auto& hold) {
                                          return std::find(gone.begin(), gone.end(), hold.first) !=
                                                 gone.end();
                                        }),
                         info.holds.end());
      }
    }
  }
};

Spool::Spool(std::unique_ptr<State> state) : state_(std::move(state)) {}
Spool::Spool(Spool&&) noexcept = default;
Spool& Spool::operator=(Spool&&) noexcept = default;
Spool::~Spool() = default;

Spool Spool::open(const std::string& dir, SpoolOptions options) {
  auto state = std::make_unique<State>();
  state->dir = dir;
  state->options = options;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw spool_error(errno, "spool: mkdir " + dir);
  }
  state->dir_fd =
      Fd(retry_eintr([&] { return ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!state->dir_fd) throw spool_error(errno, "spool: open " + dir);
  struct stat st {};
  if (::fstat(state->dir_fd.get(), &st) != 0) throw spool_error(errno, "spool: stat " + dir);
  if ((st.st_mode & 077U) != 0) {
    std::string mode;
    for (int shift = 9; shift >= 0; shift -= 3) {
      mode.push_back(static_cast<char>('0' + ((st.st_mode >> shift) & 7U)));
    }
    throw SpoolError("spool: " + dir + ": open to group or others (mode " + mode +
                     "): chmod 700 it");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw spool_error(errno, "spool: " + dir + ": not writable");
  }
  if (retry_eintr([&] { return ::flock(state->dir_fd.get(), LOCK_EX | LOCK_NB); }) != 0) {
    if (errno == EWOULDBLOCK) throw SpoolError("spool: " + dir + ": in use by another server");
    throw spool_error(errno, "spool: flock " + dir);
  }

  std::vector<std::uint64_t> numbers;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (auto number = file_number(it->path().filename().string())) numbers.push_back(*number);
  }
  if (ec) throw spool_error(ec.value(), "spool: list " + dir);
  std::sort(numbers.begin(), numbers.end());
  // Every file is read (and its version checked) before any is changed.
  for (const std::uint64_t number : numbers) state->replay_file(number);
  if (!numbers.empty()) state->next_file = numbers.back() + 1;
  for (const auto& [order, id] : state->by_order) state->replayed.push_back(state->jobs.at(id).job);
  {
    std::unique_lock lock(state->mutex);
    try {
      state->maintain(lock);
    } catch (const SpoolError&) {
      // Nothing is lost: compaction is tried again at the next new file.
    }
  }
  return Spool(std::move(state));
}

const SpoolReport& Spool::report() const noexcept { return state_->report; }
const std::vector<SpooledJob>& Spool::replayed() const noexcept { return state_->replayed; }
const std::string& Spool::dir() const noexcept { return state_->dir; }

std::vector<SpooledJob> Spool::jobs() const {
  const std::lock_guard lock(state_->mutex);
  std::vector<SpooledJob> out;
  out.reserve(state_->by_order.size());
  for (const auto& [order, id] : state_->by_order) out.push_back(state_->jobs.at(id).job);
  return out;
}

std::optional<std::string> Spool::output(std::string_view id) const {
  const std::lock_guard lock(state_->mutex);
  const auto it = state_->jobs.find(std::string(id));
  if (it == state_->jobs.end() || !it->second.job.end) return std::nullopt;
  return it->second.job.end->output;
}

std::optional<std::string> Spool::request(std::string_view id) const {
  const std::lock_guard lock(state_->mutex);
  const auto it = state_->jobs.find(std::string(id));
  if (it == state_->jobs.end()) return std::nullopt;
  return it->second.job.request;
}

SpoolTicket Spool::append(const SpoolRecord& record) {
  State& s = *state_;
  std::unique_lock lock(s.mutex);
  // A file first, since that may wait for a sync (the lock let go); then the checks and the
  // write, all under the lock at once.
  s.ensure_file(lock);
  const std::string& id = record_id(record);
  const bool accepting = std::holds_alternative<SpoolAccepted>(record);
  if (accepting && s.jobs.count(id) != 0) {
    throw std::invalid_argument("spool: job " + id + " is already in the spool");
  }
  if (!accepting && s.jobs.count(id) == 0) {
    throw std::invalid_argument("spool: job " + id + " is not in the spool");
  }
  const std::uint64_t order = accepting ? s.next_order : 0;
  const std::string frame = encode_frame(record, order);
  s.write_frame(frame);
  if (accepting) s.pending_accepts.emplace_back(s.written, id);
  s.fold(record, order, s.current_number, frame.size());
  const SpoolTicket ticket{s.written};
  if (std::holds_alternative<SpoolForgotten>(record) && s.over_bound()) {
    try {
      s.maintain(lock);
    } catch (const SpoolError&) {
      // A failed sync failed this record too: its wait() says so. A failed deletion is tried
      // again at the next compaction.
    }
  }
  return ticket;
}

void Spool::wait(SpoolTicket ticket) {
  State& s = *state_;
  const std::uint64_t sequence = ticket.sequence;
  std::uint64_t claim = 0;  // the round after which this thread begins the next sync
  for (;;) {
    // Most waits end here, woken by the sync that covered the record, without the lock.
    if (claim == 0 && s.settled.load(std::memory_order_acquire) >= sequence &&
        s.failed_through.load(std::memory_order_acquire) < sequence) {
      return;
    }
    std::unique_lock lock(s.mutex);
    if (claim != 0) {
      if (s.claimed_round == claim) s.claimed_round = 0;
      claim = 0;
    }
    if (sequence <= s.durable) {
      if (s.is_failed(sequence)) throw SpoolError(s.failure);
      return;
    }
    Bell* bell = nullptr;
    if (s.syncing && s.covering >= sequence) {
      bell = &s.bells.at(s.sync_round % 2);  // the sync under way covers it
    } else if (s.syncing && s.claimed_round != s.sync_round) {
      s.claimed_round = s.sync_round;
      claim = s.sync_round;
      bell = &s.handoff;
    } else if (s.syncing || s.lockers > 0) {
      bell = &s.bells.at((s.sync_round + 1) % 2);  // the next sync will
    } else {
      s.lead(lock);  // one sync for every record written so far
      continue;
    }
    const std::uint32_t seen = bell->count();
    lock.unlock();
    bell->wait(seen, s.dir);
  }
}

void Spool::compact() {
  std::unique_lock lock(state_->mutex);
  state_->maintain(lock);
}

std::uint64_t Spool::syncs() const {
  const std::lock_guard lock(state_->mutex);
  return state_->syncs;
}

std::uint64_t Spool::bytes() const {
  const std::lock_guard lock(state_->mutex);
  std::uint64_t total = 0;
  for (const auto& [number, info] : state_->files) total += info.size;
  return total;
}

}  // namespace sockecho
