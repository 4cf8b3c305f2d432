// sockecho: the spool, where background jobs are kept on disk so that an acknowledged job outlives
// a crash. A directory of record files; each record is one change in one job's life, made durable
// by fdatasync (one sync for every record written before it began: group commit). The first
// waiter syncs for all; a returning sync wakes only the waiters it covers, and first the one
// whose record it does not cover, which begins the next sync at once. Records go into blocks the
// file already has (it is zero-filled ahead of them, a MiB at a time, never past
// max_file_bytes), so a sync carries no change of the file's size or blocks.
//
// On disk: DIR/NNNNNNNNNNNNNNNN.spool (16 lowercase hex digits, increasing). A file begins with
// the 15 bytes "sockecho-spool\n" and a little-endian u32 format version (kSpoolVersion); a
// version this code does not know stops open() with SpoolVersionError and the file is never
// rewritten or deleted. Records follow, then zeros to the file's end (the fill; none where a fill
// failed), each record:
//
//   u32 sync marker (kSpoolSyncMarker) | u32 length of what follows the checksum (type +
//   payload) | u32 CRC-32C of type + payload | u8 type | payload
//
// All integers little-endian; a string is a u32 length and its bytes; a time is an i64 count of
// milliseconds since the epoch (the wall clock: it is kept across restarts). A reader checks every
// length against what is left, so no input reads out of bounds; a record that does not check is
// skipped and the reader looks for the next sync marker whose record checks, so a damaged record
// costs no other, and a tail cut by a crash costs only itself. The zeros past the last record
// are no damage; a record cut short where they begin is torn.
//
// Bound: a file whose records all belong to forgotten jobs (or to jobs re-written since into a
// later file) is deleted; a file of which less than half the bytes are records of live jobs has
// those jobs' current state re-written into the current file (synced), and is then deleted.
// Compaction runs at every new file, at open(), at compact(), and after a `forgotten` record that
// leaves the files over the bound; so once an append has returned, on disk:
//   bytes() <= 2 x (bytes of the live jobs' records) + max_file_bytes + one record
// where a live job is one not yet forgotten (queued, running, retrying or ended and kept).
// Compaction runs in the thread whose append (or open, or compact) called for it, under the
// spool's lock, its sync included: other appends wait for it meanwhile. The spool keeps every
// live job's state in memory too (request and output included): compaction writes it from there.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "sockecho/export.hpp"

namespace sockecho {

inline constexpr std::uint32_t kSpoolVersion = 1;
inline constexpr std::uint32_t kSpoolSyncMarker = 0xC50E5CD3;
inline constexpr std::uint64_t kDefaultSpoolFileBytes = std::uint64_t{16} << 20;

// A wall-clock time as the spool keeps it: whole milliseconds since the epoch.
using SpoolTime = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;

// Anything that stops the spool from opening or from making a record durable; what() names the
// call, the directory or file, and the reason.
class SOCKECHO_EXPORT SpoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A spool file with a format version this code does not know (or that is no spool file at all):
// the start must stop, naming it. The file is left as it was.
class SOCKECHO_EXPORT SpoolVersionError : public SpoolError {
 public:
  SpoolVersionError(const std::string& message, std::string path)
      : SpoolError(message), path_(std::move(path)) {}
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// How a job ended, as the spool records it.
enum class SpoolEnd : std::uint8_t { ok, failed, timeout, too_large, cancelled };

// The records: one change each in a job's life.
struct SOCKECHO_EXPORT SpoolAccepted {
  std::string id;
  std::string request;           // the request bytes
  std::vector<std::string> env;  // the connection's variables, NAME=value
  std::string source;            // the per-source key
  SpoolTime time{};
  bool operator==(const SpoolAccepted& other) const;
};
struct SOCKECHO_EXPORT SpoolStarted {
  std::string id;
  std::uint32_t attempt = 0;  // 1 for the first run
  SpoolTime time{};
  bool operator==(const SpoolStarted& other) const;
};
struct SOCKECHO_EXPORT SpoolNextRun {  // a run asked to be retried: the job may run again at `time`
  std::string id;
  SpoolTime time{};
  bool operator==(const SpoolNextRun& other) const;
};
struct SOCKECHO_EXPORT SpoolEnded {
  std::string id;
  SpoolEnd state = SpoolEnd::ok;
  std::int32_t exit_code = -1;  // -1: none (a signal, or no exit)
  std::int32_t signal = 0;      // 0: none
  std::string reason;           // memory, cpu, interrupted, or empty
  std::uint64_t stdout_bytes = 0;
  std::uint64_t stderr_bytes = 0;
  std::string output;  // the job's stdout as kept (may be empty)
  SpoolTime time{};
  bool operator==(const SpoolEnded& other) const;
};
struct SOCKECHO_EXPORT SpoolRequeued {  // queued again by a retry command, attempts from 0
  std::string id;
  SpoolTime time{};
  bool operator==(const SpoolRequeued& other) const;
};
struct SOCKECHO_EXPORT SpoolForgotten {  // removed from the spool
  std::string id;
  bool operator==(const SpoolForgotten& other) const;
};
using SpoolRecord = std::variant<SpoolAccepted, SpoolStarted, SpoolNextRun, SpoolEnded,
                                 SpoolRequeued, SpoolForgotten>;

// The job ID a record is about.
[[nodiscard]] SOCKECHO_EXPORT const std::string& record_id(const SpoolRecord& record);

// One job's state, folded from its records.
struct SOCKECHO_EXPORT SpooledJob {
  std::string id;
  std::string request;
  std::vector<std::string> env;
  std::string source;
  SpoolTime accepted{};
  std::optional<SpoolTime> requeued;       // the latest requeue, if any
  unsigned attempts = 0;                   // `started` records since the latest requeue
  bool running = false;                    // started and neither ended nor set to run again
  std::optional<SpoolTime> started;        // the latest start
  std::optional<SpoolTime> next_run;       // retrying: when it may run again
  std::optional<SpoolEnded> end;           // once ended
  std::optional<SpoolTime> first_started;  // the first start since the latest requeue
  bool operator==(const SpooledJob& other) const;
};

// A record skipped when the spool was read.
struct SOCKECHO_EXPORT SpoolDamage {
  std::string file;  // its name in DIR
  std::uint64_t offset = 0;
  bool torn = false;  // a tail cut short (a crash mid-write), not bytes that changed
};

// What open() found.
struct SOCKECHO_EXPORT SpoolReport {
  std::size_t files = 0;
  std::size_t records = 0;  // records that checked
  std::size_t damaged = 0;  // skipped: bad checksum or malformed
  std::size_t torn = 0;     // skipped: cut short at a file's end
  std::vector<SpoolDamage> places;
};

struct SOCKECHO_EXPORT SpoolOptions {
  // A file past this size is closed and a new one started.
  std::uint64_t max_file_bytes = kDefaultSpoolFileBytes;
};

// Which append a wait is for.
struct SOCKECHO_EXPORT SpoolTicket {
  std::uint64_t sequence = 0;
};

// One spool directory, held by one Spool at a time (a flock on DIR, let go when it is
// destroyed). Every member function may be called from many threads at once; a moved-from Spool
// may only be destroyed or assigned to. The destructor syncs nothing: a record appended and
// never waited for may be lost with the process.
class SOCKECHO_EXPORT Spool {
 public:
  // Opens DIR (created 0700 if missing) and reads every file in it. Throws SpoolError when DIR is
  // not a writable directory, is open to group or others, or is held by another Spool (a message
  // containing "in use"); SpoolVersionError for a file of an unknown version.
  [[nodiscard]] static Spool open(const std::string& dir, SpoolOptions options = {});

  Spool(Spool&&) noexcept;
  Spool& operator=(Spool&&) noexcept;
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;
  ~Spool();

  // What open() found, and the jobs it read: every job not forgotten, in acceptance order.
  [[nodiscard]] const SpoolReport& report() const noexcept;
  [[nodiscard]] const std::vector<SpooledJob>& replayed() const noexcept;
  // The jobs now (as replayed, with every record appended since), in acceptance order.
  [[nodiscard]] std::vector<SpooledJob> jobs() const;
  // The output an ended job's `ended` record holds; std::nullopt for a job not in the spool or
  // not ended.
  [[nodiscard]] std::optional<std::string> output(std::string_view id) const;
  // The request bytes of a job in the spool; std::nullopt for a job not in it.
  [[nodiscard]] std::optional<std::string> request(std::string_view id) const;

  // Writes one record (one write(), in the order of the calls) without waiting for it to be
  // durable: a later wait() or commit() covers it. Throws SpoolError when it cannot be written
  // (the record is then not in the spool), std::invalid_argument for a record that does not fit
  // the job's life (an ID accepted twice, a change to a job not in the spool).
  SpoolTicket append(const SpoolRecord& record);
  // Returns once a sync that covers the ticket's record has returned; throws SpoolError if that
  // record could not be made durable. One sync covers every record written before it began;
  // a failed write or sync fails every record of its file not yet covered, abandons the file
  // (never written or synced again) and the next append starts a new one, into which the
  // abandoned file's live jobs are re-written. A job whose `accepted` failed is out of the
  // spool: before wait() throws, the file is cut back to its synced records (and synced), so
  // the job is not found at the next open(); should the cut fail, a `forgotten` for it goes
  // into the next file.
  void wait(SpoolTicket ticket);
  // append() and wait().
  void commit(const SpoolRecord& record) { wait(append(record)); }
  // Deletes the files no live job needs and re-writes the live jobs of sparse files forward;
  // also done by open() and at every new file.
  void compact();

  [[nodiscard]] std::uint64_t syncs() const;  // fdatasync/fsync calls: sockecho_spool_syncs_total
  // Bytes in the files (the zero fill included): sockecho_spool_bytes.
  [[nodiscard]] std::uint64_t bytes() const;
  [[nodiscard]] const std::string& dir() const noexcept;

 private:
  struct SOCKECHO_NO_EXPORT State;
  explicit Spool(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// CRC-32C (Castagnoli), as the records carry it; crc32c("123456789") == 0xE3069283.
[[nodiscard]] SOCKECHO_EXPORT std::uint32_t crc32c(std::string_view data) noexcept;
// A record as it is written: sync marker, length, checksum, type, payload. Throws
// std::length_error for a field or a record over 1 GiB.
[[nodiscard]] SOCKECHO_EXPORT std::string encode_record(const SpoolRecord& record);
// The record a frame holds (as encode_record() wrote it, nothing after it), or nullopt when it
// is malformed in any way: marker, length, checksum, type, a field cut short or bytes left over.
[[nodiscard]] SOCKECHO_EXPORT std::optional<SpoolRecord> decode_record(std::string_view frame);

}  // namespace sockecho
