// The spool alone: records and their checksums, torn tails, versions, the directory's rules,
// group commit, failure, and compaction, against files of the test's own making.
#include "sockecho/spool.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace sockecho {

// How a failing comparison shows a job: its state, without the request's bytes.
void PrintTo(const SpooledJob& job, std::ostream* out) {
  const auto ms = [](const std::optional<SpoolTime>& t) {
    return t ? std::to_string(t->time_since_epoch().count()) : std::string("-");
  };
  *out << job.id << "{accepted=" << job.accepted.time_since_epoch().count()
       << " requeued=" << ms(job.requeued) << " attempts=" << job.attempts
       << " running=" << job.running << " started=" << ms(job.started)
       << " next_run=" << ms(job.next_run) << " end="
       << (job.end ? std::to_string(job.end->output.size()) + "@" +
                         std::to_string(job.end->time.time_since_epoch().count())
                   : std::string("-"))
       << "}";
}

namespace {

SpoolTime at(std::int64_t ms) { return SpoolTime(std::chrono::milliseconds(ms)); }

SpoolAccepted accepted(const std::string& id, std::int64_t ms = 1000) {
  return {id,
          "request of " + id + std::string("\0\n\xff", 3),
          {"PROTO=TCP", "TCPREMOTEIP=::1"},
          "::1",
          at(ms)};
}

// The spool files in a directory, sorted by name (their order).
std::vector<std::string> spool_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 6 && name.substr(name.size() - 6) == ".spool") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Where a spool file's records end: the file is zero-filled ahead of them.
std::size_t records_end(const std::string& data) {
  std::size_t pos = 19;  // "sockecho-spool\n" and the version
  while (data.size() - pos >= 12 && data.compare(pos, 4, "\xD3\x5C\x0E\xC5", 4) == 0) {
    std::uint32_t length = 0;
    for (int i = 3; i >= 0; --i) {
      length =
          (length << 8) | static_cast<unsigned char>(data[pos + 4 + static_cast<std::size_t>(i)]);
    }
    pos += 12 + length;
  }
  return pos;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777U;
}

std::vector<SpoolRecord> every_kind() {
  SpoolEnded ended{"b", SpoolEnd::failed,           3,       0, "memory", 12,
                   7,   std::string("out\0put", 7), at(5000)};
  return {accepted("a"),
          accepted("b", 1001),
          SpoolStarted{"a", 1, at(2000)},
          SpoolNextRun{"a", at(12000)},
          SpoolStarted{"a", 2, at(12001)},
          SpoolStarted{"b", 1, at(3000)},
          ended,
          SpoolRequeued{"b", at(6000)},
          accepted("c", 1002),
          SpoolEnded{"c", SpoolEnd::cancelled, -1, 15, "", 0, 0, "", at(7000)},
          accepted("d", 1003),
          SpoolForgotten{"c"}};
}

TEST(SpoolTest, Crc32cOfTheCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283U);
  EXPECT_EQ(crc32c(""), 0U);
}

TEST(SpoolTest, EveryRecordDecodesAsEncoded) {
  for (const auto& record : every_kind()) {
    const std::string frame = encode_record(record);
    const auto decoded = decode_record(frame);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, record);
  }
}

TEST(SpoolTest, DecoderRejectsEveryCutAndEveryFlippedByte) {
  for (const auto& record : every_kind()) {
    const std::string frame = encode_record(record);
    for (std::size_t size = 0; size < frame.size(); ++size) {
      EXPECT_FALSE(decode_record(frame.substr(0, size)).has_value()) << size;
    }
    EXPECT_FALSE(decode_record(frame + "x").has_value());
    for (std::size_t i = 0; i < frame.size(); ++i) {
      std::string flipped = frame;
      flipped[i] = static_cast<char>(flipped[i] ^ 0x20);
      EXPECT_FALSE(decode_record(flipped).has_value()) << i;
    }
  }
}

TEST(SpoolTest, EveryRecordKindSurvivesCloseAndReopen) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  std::vector<SpooledJob> before;
  {
    Spool spool = Spool::open(dir);
    EXPECT_TRUE(spool.replayed().empty());
    for (const auto& record : every_kind()) spool.commit(record);
    before = spool.jobs();
  }
  ASSERT_EQ(before.size(), 3U);  // c is forgotten
  EXPECT_EQ(before[0].id, "a");
  EXPECT_EQ(before[0].attempts, 2U);
  EXPECT_TRUE(before[0].running);
  EXPECT_EQ(before[0].started, at(12001));
  EXPECT_FALSE(before[0].next_run.has_value());
  EXPECT_EQ(before[1].id, "b");
  EXPECT_EQ(before[1].attempts, 0U);
  EXPECT_EQ(before[1].requeued, at(6000));
  EXPECT_FALSE(before[1].end.has_value());
  EXPECT_EQ(before[2].id, "d");
  EXPECT_EQ(before[2].request, accepted("d").request);
  EXPECT_EQ(before[2].env, accepted("d").env);
  EXPECT_EQ(before[2].source, "::1");
  EXPECT_EQ(before[2].accepted, at(1003));

  const Spool again = Spool::open(dir);
  EXPECT_EQ(again.replayed(), before);
  EXPECT_EQ(again.report().records, every_kind().size());
  EXPECT_EQ(again.report().damaged, 0U);
  EXPECT_EQ(again.report().torn, 0U);
}

TEST(SpoolTest, AnEndedJobKeepsItsEnd) {
  const test::ScratchDir scratch;
  const SpoolEnded end{"x", SpoolEnd::timeout, -1, 9, "cpu", 100, 5, "partial", at(9)};
  {
    Spool spool = Spool::open(scratch.path());
    spool.commit(accepted("x"));
    spool.commit(SpoolStarted{"x", 1, at(5)});
    spool.commit(end);
  }
  const Spool again = Spool::open(scratch.path());
  ASSERT_EQ(again.replayed().size(), 1U);
  EXPECT_EQ(again.replayed()[0].end, end);
  EXPECT_FALSE(again.replayed()[0].running);
  EXPECT_EQ(again.replayed()[0].attempts, 1U);
}

TEST(SpoolTest, AFlippedByteCostsOneRecordAndIsReportedWhere) {
  const test::ScratchDir scratch;
  {
    Spool spool = Spool::open(scratch.path());
    for (const char* id : {"one", "two", "six"}) spool.commit(accepted(id));
  }
  const auto files = spool_files(scratch.path());
  ASSERT_EQ(files.size(), 1U);
  std::string data = scratch.read(files[0]);
  const std::size_t record = encode_record(accepted("one")).size();
  const std::size_t second = records_end(data) - 2 * record;  // records of equal size
  data[second + 20] = static_cast<char>(data[second + 20] ^ 1);
  scratch.write(files[0], data);

  const Spool spool = Spool::open(scratch.path());
  ASSERT_EQ(spool.replayed().size(), 2U);
  EXPECT_EQ(spool.replayed()[0].id, "one");
  EXPECT_EQ(spool.replayed()[1].id, "six");
  EXPECT_EQ(spool.report().damaged, 1U);
  EXPECT_EQ(spool.report().torn, 0U);
  ASSERT_EQ(spool.report().places.size(), 1U);
  EXPECT_EQ(spool.report().places[0].file, files[0]);
  EXPECT_EQ(spool.report().places[0].offset, second);
  EXPECT_FALSE(spool.report().places[0].torn);
}

TEST(SpoolTest, ATornTailCostsOnlyItselfAndAppendsGoToANewFile) {
  const test::ScratchDir scratch;
  {
    Spool spool = Spool::open(scratch.path());
    for (const char* id : {"one", "two", "six"}) spool.commit(accepted(id));
  }
  auto files = spool_files(scratch.path());
  ASSERT_EQ(files.size(), 1U);
  const std::string torn_name = files[0];
  std::string data = scratch.read(torn_name);
  const std::size_t record = encode_record(accepted("one")).size();
  data.resize(records_end(data) - record / 2);  // no zero fill after it (a fill that failed)
  scratch.write(torn_name, data);
  {
    Spool spool = Spool::open(scratch.path());
    ASSERT_EQ(spool.replayed().size(), 2U);
    EXPECT_EQ(spool.replayed()[1].id, "two");
    EXPECT_EQ(spool.report().torn, 1U);
    ASSERT_EQ(spool.report().places.size(), 1U);
    EXPECT_EQ(spool.report().places[0].file, torn_name);
    EXPECT_EQ(spool.report().places[0].offset, data.size() - (record - record / 2));
    EXPECT_TRUE(spool.report().places[0].torn);
    spool.commit(accepted("four"));
    spool.commit(SpoolStarted{"two", 1, at(1)});
  }
  EXPECT_EQ(scratch.read(torn_name), data) << "nothing is appended after a torn tail";
  files = spool_files(scratch.path());
  EXPECT_EQ(files.size(), 2U);
  const Spool spool = Spool::open(scratch.path());
  ASSERT_EQ(spool.replayed().size(), 3U);
  EXPECT_EQ(spool.replayed()[1].attempts, 1U);
  EXPECT_EQ(spool.replayed()[2].id, "four");
  EXPECT_EQ(spool.report().torn, 1U);
}

TEST(SpoolTest, TheZeroFillAheadOfTheRecordsIsNoDamageAndARecordCutInItIsTorn) {
  const test::ScratchDir scratch;
  {
    Spool spool = Spool::open(scratch.path());
    for (const char* id : {"one", "two", "six"}) spool.commit(accepted(id));
  }
  const auto files = spool_files(scratch.path());
  ASSERT_EQ(files.size(), 1U);
  std::string data = scratch.read(files[0]);
  const std::size_t end = records_end(data);
  ASSERT_GT(data.size(), end) << "zero-filled ahead";
  EXPECT_EQ(data.find_first_not_of('\0', end), std::string::npos);
  {
    const Spool spool = Spool::open(scratch.path());
    EXPECT_EQ(spool.replayed().size(), 3U);
    EXPECT_EQ(spool.report().damaged, 0U);
    EXPECT_EQ(spool.report().torn, 0U);
    EXPECT_GE(spool.bytes(), data.size()) << "the fill counts: it is on disk";
  }
  // A crash while the last record was written: the rest of it is still the fill's zeros. Its
  // length, or part of its marker, are all there is of it at the worst.
  const std::size_t record = encode_record(accepted("one")).size();
  for (const std::size_t kept : {record / 2, std::size_t{6}, std::size_t{2}}) {
    std::string cut = data;
    std::fill(cut.begin() + static_cast<std::ptrdiff_t>(end - record + kept),
              cut.begin() + static_cast<std::ptrdiff_t>(end), '\0');
    const test::ScratchDir again;
    ASSERT_EQ(::chmod(again.path().c_str(), 0700), 0);
    again.write(files[0], cut);
    const Spool spool = Spool::open(again.path());
    ASSERT_EQ(spool.replayed().size(), 2U) << kept;
    EXPECT_EQ(spool.replayed()[1].id, "two");
    EXPECT_EQ(spool.report().damaged, 0U) << kept;
    EXPECT_EQ(spool.report().torn, 1U) << kept;
    ASSERT_EQ(spool.report().places.size(), 1U);
    EXPECT_EQ(spool.report().places[0].offset, end - record);
    EXPECT_TRUE(spool.report().places[0].torn);
  }
}

TEST(SpoolTest, AFileCutInItsHeaderIsTornAndDeleted) {
  const test::ScratchDir scratch;
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0700), 0);
  scratch.write("0000000000000001.spool", "sockecho-sp");  // a crash while it was created
  const Spool spool = Spool::open(scratch.path());
  EXPECT_TRUE(spool.replayed().empty());
  EXPECT_EQ(spool.report().torn, 1U);
  ASSERT_EQ(spool.report().places.size(), 1U);
  EXPECT_EQ(spool.report().places[0].offset, 0U);
  EXPECT_TRUE(spool_files(scratch.path()).empty()) << "it held no record";
  EXPECT_EQ(spool.bytes(), 0U);
}

TEST(SpoolTest, AnUnknownVersionStopsOpenNamingTheFileAndLeavesItAlone) {
  const test::ScratchDir scratch;
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0700), 0);
  const std::string name = "0000000000000001.spool";
  const std::string content = std::string("sockecho-spool\n\x02\0\0\0", 19) + "records of v2";
  scratch.write(name, content);
  scratch.write("0000000000000000.spool", "");  // torn at its creation: would be deleted
  try {
    const Spool spool = Spool::open(scratch.path());
    ADD_FAILURE() << "opened";
  } catch (const SpoolVersionError& e) {
    EXPECT_EQ(e.path(), scratch.file(name));
    EXPECT_NE(std::string(e.what()).find(scratch.file(name)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("version 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(scratch.read(name), content);
  EXPECT_EQ(spool_files(scratch.path()).size(), 2U);
  scratch.write(name, "not a spool file at all");
  EXPECT_THROW((void)Spool::open(scratch.path()), SpoolVersionError);
}

TEST(SpoolTest, ADirectoryHeldByAnotherSpoolIsInUse) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  {
    const Spool first = Spool::open(dir);
    try {
      const Spool second = Spool::open(dir);
      ADD_FAILURE() << "opened twice";
    } catch (const SpoolError& e) {
      EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW((void)Spool::open(dir));
}

// Runs `checks` in a child process, which exits with what it returns (98 for an exception):
// 0 when the child found everything as it should be, else the number of the check that failed.
void passes_in_a_child(const std::function<int()>& checks) {
  const pid_t pid = ::fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    int code = 99;
    try {
      code = checks();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  ASSERT_EQ(WEXITSTATUS(status), 0) << "check that failed in the child";
}

TEST(SpoolTest, ADirectoryHeldByAnotherProcessIsInUse) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  const Spool held = Spool::open(dir);
  passes_in_a_child([&] {
    try {
      const Spool second = Spool::open(dir);
    } catch (const SpoolError& e) {
      return std::string(e.what()).find("in use") == std::string::npos ? 2 : 0;
    }
    return 1;
  });
}

TEST(SpoolTest, RecordsMustFitAJobsLife) {
  const test::ScratchDir scratch;
  Spool spool = Spool::open(scratch.file("spool"));
  spool.commit(accepted("a"));
  EXPECT_THROW((void)spool.append(accepted("a")), std::invalid_argument);
  EXPECT_THROW((void)spool.append(SpoolStarted{"b", 1, at(1)}), std::invalid_argument);
  spool.commit(SpoolForgotten{"a"});
  EXPECT_THROW((void)spool.append(SpoolForgotten{"a"}), std::invalid_argument);
  EXPECT_TRUE(spool.jobs().empty());
}

TEST(SpoolTest, DirectoryAndFilesArePrivate) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  {
    Spool spool = Spool::open(dir);
    spool.commit(accepted("a"));
  }
  EXPECT_EQ(mode_of(dir), 0700U);
  for (const auto& name : spool_files(dir))
    EXPECT_EQ(mode_of(scratch.file("spool/" + name)), 0600U);

  ASSERT_EQ(::chmod(dir.c_str(), 0750), 0);
  try {
    const Spool spool = Spool::open(dir);
    ADD_FAILURE() << "opened a directory open to its group";
  } catch (const SpoolError& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0750"), std::string::npos) << e.what();
  }
  const std::string plain = scratch.write("plain", "x");
  EXPECT_THROW((void)Spool::open(plain), SpoolError);
}

TEST(SpoolTest, ManyThreadsShareSyncs) {
  const test::ScratchDir scratch;
  constexpr int kThreads = 16;
  constexpr int kEach = 25;
  std::uint64_t syncs = 0;
  {
    Spool spool = Spool::open(scratch.path() + "/spool");
    const std::uint64_t before = spool.syncs();
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          try {
            spool.commit(accepted("t" + std::to_string(t) + "-" + std::to_string(i)));
          } catch (const std::exception&) {
            ++failures;
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
    syncs = spool.syncs() - before;
  }
  const int appends = kThreads * kEach;
  std::cout << "group commit: " << appends << " appends, " << syncs << " syncs ("
            << static_cast<double>(syncs) / appends << " per append)\n";
  EXPECT_LT(syncs, static_cast<std::uint64_t>(appends));
  const Spool spool = Spool::open(scratch.path() + "/spool");
  EXPECT_EQ(spool.replayed().size(), static_cast<std::size_t>(appends));
}

// In a child process whose file size limit makes write() fail (EFBIG) part-way through a
// record: 0 when the spool behaved, else the number of the check that failed. With
// `append_after`, one more job is accepted once the limit is lifted.
int run_out_of_room(const std::string& dir, bool append_after) {
  if (std::signal(SIGXFSZ, SIG_IGN) == SIG_ERR) return 1;
  rlimit unlimited{};
  if (::getrlimit(RLIMIT_FSIZE, &unlimited) != 0) return 2;
  Spool spool = Spool::open(dir);
  const SpoolTicket kept = spool.append(accepted("kept"));
  spool.wait(kept);
  const std::uint64_t record = encode_record(accepted("lost")).size();
  const auto files = spool_files(dir);
  if (files.size() != 1) return 10;
  // A size limit stops a write by where it goes: so the limit is set from the end of the
  // records, not from bytes(), which counts the zero fill past them.
  rlimit tight = unlimited;
  tight.rlim_cur = records_end(read_all(dir + "/" + files[0])) + 2 * record + 10;
  if (::setrlimit(RLIMIT_FSIZE, &tight) != 0) return 3;
  // Written, not yet synced: the failure that follows takes both.
  const SpoolTicket lost = spool.append(accepted("lost"));
  const SpoolTicket also = spool.append(accepted("also"));
  SpoolAccepted big = accepted("big");
  big.request.assign(1000, 'b');
  try {
    (void)spool.append(big);
    return 4;
  } catch (const SpoolError& e) {
    if (std::string(e.what()).find("File too large") == std::string::npos) return 5;
  }
  for (const SpoolTicket ticket : {lost, also}) {
    try {
      spool.wait(ticket);
      return 6;  // acknowledged although its file failed
    } catch (const SpoolError& e) {
      if (std::string(e.what()).find("File too large") == std::string::npos) return 9;
    }
  }
  spool.wait(kept);  // durable before the failure: still so
  if (!append_after) return 0;
  if (::setrlimit(RLIMIT_FSIZE, &unlimited) != 0) return 7;
  spool.commit(accepted("after"));
  const auto jobs = spool.jobs();
  if (jobs.size() != 2 || jobs[0].id != "kept" || jobs[1].id != "after") return 8;
  return 0;
}

TEST(SpoolTest, AFailedWriteFailsItsBatchAndTheSpoolGoesOn) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  ASSERT_NO_FATAL_FAILURE(passes_in_a_child([&] { return run_out_of_room(dir, true); }));
  // The failed file's jobs were re-written forward, the failed acceptance forgotten.
  const Spool spool = Spool::open(dir);
  ASSERT_EQ(spool.replayed().size(), 2U);
  EXPECT_EQ(spool.replayed()[0].id, "kept");
  EXPECT_EQ(spool.replayed()[1].id, "after");
  EXPECT_EQ(spool_files(dir).size(), 1U) << "the abandoned file is deleted";
}

// The failure is the last thing the spool does before it closes: no later append writes the
// failed acceptances' `forgotten`, so the failed file itself must not hold them whole (CI once
// replayed a job whose commit had failed, the last its thread tried).
TEST(SpoolTest, AFailedAcceptanceIsNotReplayedWhenNothingIsAppendedAfterIt) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  ASSERT_NO_FATAL_FAILURE(passes_in_a_child([&] { return run_out_of_room(dir, false); }));
  const Spool spool = Spool::open(dir);
  ASSERT_EQ(spool.replayed().size(), 1U);
  EXPECT_EQ(spool.replayed()[0].id, "kept");
  EXPECT_EQ(spool.report().torn, 0U) << "the failed records were cut, not left torn";
}

// In a child process whose files may not pass `limit` bytes: `threads` threads accept jobs at
// once, each waiting for its own; the IDs acknowledged go to `acked` (one a line), then a line
// "failed N" for the appends or waits that failed. Exit 0 unless something else went wrong.
int accept_while_files_fail(const std::string& dir, const std::string& acked, int threads) {
  if (std::signal(SIGXFSZ, SIG_IGN) == SIG_ERR) return 1;
  rlimit unlimited{};
  if (::getrlimit(RLIMIT_FSIZE, &unlimited) != 0) return 2;
  Spool spool = Spool::open(dir);
  rlimit tight = unlimited;
  tight.rlim_cur = 3000;
  if (::setrlimit(RLIMIT_FSIZE, &tight) != 0) return 3;
  std::mutex mutex;
  std::vector<std::string> ok;
  int failed = 0;
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < 12; ++i) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        bool done = false;
        try {
          spool.commit(accepted(id));
          done = true;
        } catch (const SpoolError&) {
        } catch (const std::exception& e) {
          std::cerr << "unexpected: " << e.what() << "\n";
        }
        const std::lock_guard lock(mutex);
        if (done) {
          ok.push_back(id);
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  if (::setrlimit(RLIMIT_FSIZE, &unlimited) != 0) return 4;
  std::string list;
  for (const auto& id : ok) list += id + "\n";
  list += "failed " + std::to_string(failed) + "\n";
  std::ofstream out(acked, std::ios::binary);
  out << list;
  return out.flush() ? 0 : 5;
}

TEST(SpoolTest, NoJobIsAcknowledgedThatIsNotOnDisk) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  const std::string acked = scratch.file("acked");
  ASSERT_NO_FATAL_FAILURE(
      passes_in_a_child([&] { return accept_while_files_fail(dir, acked, 8); }));
  std::vector<std::string> ids;
  std::string failed;
  std::istringstream lines(scratch.read("acked"));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("failed ", 0) == 0) {
      failed = line;
    } else {
      ids.push_back(line);
    }
  }
  std::cout << "files of 3000 bytes at most: " << ids.size() << " acknowledged, " << failed << "\n";
  EXPECT_FALSE(ids.empty());
  EXPECT_NE(failed, "failed 0") << "no write failed: the test tested nothing";
  const Spool spool = Spool::open(dir);
  std::vector<std::string> replayed;
  for (const auto& job : spool.replayed()) replayed.push_back(job.id);
  std::sort(ids.begin(), ids.end());
  std::sort(replayed.begin(), replayed.end());
  EXPECT_EQ(replayed, ids) << "exactly the acknowledged jobs, and each once";
}

// The test's own fold of a job's life, to compare the spool with.
void model_apply(std::vector<SpooledJob>& model, const SpoolRecord& record) {
  if (const auto* a = std::get_if<SpoolAccepted>(&record)) {
    SpooledJob job;
    job.id = a->id;
    job.request = a->request;
    job.env = a->env;
    job.source = a->source;
    job.accepted = a->time;
    model.push_back(job);
    return;
  }
  auto it = std::find_if(model.begin(), model.end(),
                         [&](const SpooledJob& job) { return job.id == record_id(record); });
  ASSERT_NE(it, model.end());
  if (std::holds_alternative<SpoolForgotten>(record)) {
    model.erase(it);
  } else if (const auto* s = std::get_if<SpoolStarted>(&record)) {
    if (it->attempts == 0) it->first_started = s->time;
    it->attempts += 1;
    it->running = true;
    it->started = s->time;
    it->next_run.reset();
    it->end.reset();
  } else if (const auto* n = std::get_if<SpoolNextRun>(&record)) {
    it->running = false;
    it->next_run = n->time;
  } else if (const auto* e = std::get_if<SpoolEnded>(&record)) {
    it->running = false;
    it->next_run.reset();
    it->end = *e;
  } else if (const auto* q = std::get_if<SpoolRequeued>(&record)) {
    *it = SpooledJob{it->id, it->request, it->env,      it->source,   it->accepted, q->time,
                     0,      false,       std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  }
}

// A linear congruential generator of the test's own, so a failing step can be replayed.
class Lcg {
 public:
  explicit Lcg(std::uint64_t seed) : state_(seed) {}
  std::uint64_t below(std::uint64_t n) {
    state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state_ >> 33) % n;
  }

 private:
  std::uint64_t state_;
};

class SpoolModelTest : public testing::TestWithParam<std::uint64_t> {};

TEST_P(SpoolModelTest, RandomLivesMatchAModelAcrossReopens) {
  const test::ScratchDir scratch;
  const std::string dir = scratch.file("spool");
  const SpoolOptions options{1024};  // small files: rotation and compaction happen often
  Lcg random(GetParam());
  std::vector<SpooledJob> model;
  int next_id = 0;
  for (int step = 0; step < 300; ++step) {
    Spool spool = Spool::open(dir, options);
    ASSERT_EQ(spool.replayed(), model) << "step " << step;
    ASSERT_EQ(spool.report().damaged + spool.report().torn, 0U);
    const std::int64_t now = 1000 + step;
    // A few records per opening, each a change to a random job (or a new one).
    for (int i = 0; i < 3; ++i) {
      const std::uint64_t what = random.below(model.empty() ? 1 : 6);
      SpoolRecord record = SpoolForgotten{};
      if (what == 0) {
        record = accepted("job" + std::to_string(next_id++), now);
      } else {
        const std::string id = model[random.below(model.size())].id;
        switch (what) {
          case 1:
            record = SpoolStarted{id, static_cast<std::uint32_t>(random.below(9)), at(now)};
            break;
          case 2:
            record = SpoolNextRun{id, at(now + 10000)};
            break;
          case 3:
            record = SpoolEnded{
                id, SpoolEnd::ok, 0, 0, "", 6, 0, std::string(random.below(300), 'o'), at(now)};
            break;
          case 4:
            record = SpoolRequeued{id, at(now)};
            break;
          default:
            record = SpoolForgotten{id};
            break;
        }
      }
      if (random.below(2) == 0) {
        spool.commit(record);
      } else {
        const SpoolTicket ticket = spool.append(record);
        spool.wait(ticket);
      }
      model_apply(model, record);
    }
    ASSERT_EQ(spool.jobs(), model) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, SpoolModelTest, testing::Values(20261207, 23, 4242));

TEST(SpoolTest, CompactionKeepsTheSpoolBounded) {
  const test::ScratchDir scratch;
  constexpr std::uint64_t kFileBytes = 4096;
  Spool spool = Spool::open(scratch.path() + "/spool", SpoolOptions{kFileBytes});
  std::map<std::string, std::uint64_t> live;  // bytes of each live job's records
  std::uint64_t largest = 0;
  std::uint64_t peak = 0;
  constexpr int kJobs = 600;
  constexpr std::size_t kKept = 8;
  for (int n = 0; n < kJobs; ++n) {
    const std::string id = "job" + std::to_string(n);
    const std::vector<SpoolRecord> life = {
        accepted(id, n), SpoolStarted{id, 1, at(n)},
        SpoolEnded{id, SpoolEnd::ok, 0, 0, "", 200, 0, std::string(200, 'r'), at(n)}};
    for (const auto& record : life) {
      spool.commit(record);
      const std::uint64_t size = encode_record(record).size();
      live[id] += size;
      largest = std::max(largest, size);
    }
    // Ended jobs past the newest kKept are forgotten, as --keep-max would.
    if (n >= static_cast<int>(kKept)) {
      const std::string old = "job" + std::to_string(n - static_cast<int>(kKept));
      spool.commit(SpoolForgotten{old});
      live.erase(old);
    }
    std::uint64_t live_bytes = 0;
    for (const auto& [job, bytes] : live) live_bytes += bytes;
    const std::uint64_t bound = 2 * live_bytes + kFileBytes + largest + 64;
    ASSERT_LE(spool.bytes(), bound) << "job " << n;
    peak = std::max(peak, spool.bytes());
  }
  // Jobs forgotten long after they were written, with no new file meanwhile: compaction runs
  // as the dead bytes pass the bound, not only at the next file.
  for (int n = 0; n < 40; ++n) {
    const std::string id = "late" + std::to_string(n);
    spool.commit(accepted(id, n));
    live[id] += encode_record(accepted(id, n)).size();
  }
  for (int n = 0; n < 39; ++n) {
    const std::string id = "late" + std::to_string(n);
    spool.commit(SpoolForgotten{id});
    live.erase(id);
    std::uint64_t live_bytes = 0;
    for (const auto& [job, bytes] : live) live_bytes += bytes;
    ASSERT_LE(spool.bytes(), 2 * live_bytes + kFileBytes + largest + 64) << "late job " << n;
  }
  std::cout << "compaction: " << kJobs << " jobs, peak " << peak << " bytes on disk, "
            << spool_files(spool.dir()).size() << " files at the end\n";
  std::uint64_t on_disk = 0;
  for (const auto& name : spool_files(spool.dir())) {
    on_disk += std::filesystem::file_size(spool.dir() + "/" + name);
  }
  EXPECT_EQ(on_disk, spool.bytes());
  EXPECT_EQ(spool.jobs().size(), kKept + 1);
}

}  // namespace
}  // namespace sockecho
