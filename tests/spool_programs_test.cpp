// sockecho-server --background --spool DIR, the real program: an acknowledged job survives
// kill -9 (counted over many rounds), a stop leaves the queued jobs for the next start, damaged
// records cost no other, an unknown format stops the start untouched, one server per spool, and
// no acknowledgement before the sync that covers it (read from strace). And the start-up rules
// of the flags that shape background jobs (--spool, --status, --retry-delay, --max-attempts,
// --keep, --keep-max) and of --unix-mode/--unix-group, which --status unix:PATH shares.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "programs.hpp"
#include "sockecho/client.hpp"
#include "sockecho/spool.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using namespace std::chrono_literals;
using test::ServerProcess;

// A job that appends its ID to `file` (one line each, whole: O_APPEND).
std::vector<std::string> recording_job(const std::string& file) {
  return {"--exec", "sh", "-c", R"(echo "$SOCKECHO_JOB_ID" >> ")" + file + "\""};
}

std::vector<std::string> spooled(const std::string& dir, std::vector<std::string> program,
                                 std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--background", "--spool", dir};
  args.insert(args.end(), more.begin(), more.end());
  args.insert(args.end(), program.begin(), program.end());
  return args;
}

// The ID of an "accepted ID\n" answer (the prefix is empty with --exec), or "".
std::string accepted_id(const std::string& answer) {
  if (answer.rfind("accepted ", 0) != 0 || answer.back() != '\n') return {};
  return answer.substr(9, answer.size() - 10);
}

std::set<std::string> lines_in(const std::string& path) {
  std::set<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.insert(line);
  return lines;
}

std::map<std::string, int> counts_in(const std::string& path) {
  std::map<std::string, int> counts;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) ++counts[line];
  return counts;
}

TEST(SpoolPrograms, EveryAcknowledgedJobRunsThoughTheServerIsKilledAtRandomMoments) {
  constexpr int kRounds = 20;
  constexpr int kClients = 16;
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string ran = dir.file("ran");
  std::set<std::string> acknowledged;
  std::mutex acknowledged_mutex;
  std::uint32_t seed = 20261207;  // the test's own LCG: the moments differ, the run repeats
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    ServerProcess server(spooled(spool, recording_job(ran), {"--jobs", "4", "--queue", "100000"}));
    std::atomic<bool> go{true};
    std::vector<std::thread> clients;
    clients.reserve(kClients);
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        for (int n = 0; go && n < 2000; ++n) {
          try {
            const std::string id = accepted_id(request(
                "127.0.0.1", server.port(), "job " + std::to_string(c) + "." + std::to_string(n)));
            if (!id.empty()) {
              const std::lock_guard<std::mutex> lock(acknowledged_mutex);
              acknowledged.insert(id);
            }
          } catch (const std::exception&) {  // the server was killed under this request
            return;
          }
        }
      });
    }
    seed = seed * 1664525U + 1013904223U;
    const auto moment = std::chrono::milliseconds(20 + (seed >> 8) % 300);
    std::this_thread::sleep_for(moment);  // the moment of the kill: the test's choice, not a wait
    server.signal(SIGKILL);
    EXPECT_EQ(server.wait(), 128 + SIGKILL);
    go = false;
    for (std::thread& t : clients) t.join();
  }
  // A last start runs what is left; then every acknowledged job has run, or ended out of
  // attempts (killed in every one of its runs), which its log line says.
  ServerProcess last(spooled(spool, recording_job(ran), {"--jobs", "4", "--queue", "100000"}));
  // Thousands of jobs: waited for as long as they keep running (a busy machine runs them
  // slowly), given up only after kPatience with none run.
  bool all_ran = false;
  std::size_t done_count = 0;
  for (bool progressed = true; !all_ran && progressed;) {
    progressed = test::eventually([&] {
      const std::set<std::string> done = lines_in(ran);
      all_ran = std::all_of(acknowledged.begin(), acknowledged.end(),
                            [&](const std::string& id) { return done.count(id) > 0; });
      const bool more = done.size() > done_count;
      done_count = done.size();
      return all_ran || more;
    });
  }
  last.signal(SIGTERM);
  EXPECT_EQ(last.wait(), 0) << last.err();
  const std::map<std::string, int> runs = counts_in(ran);
  std::size_t missing = 0;
  std::size_t twice = 0;
  for (const std::string& id : acknowledged) {
    const auto found = runs.find(id);
    if (found == runs.end()) {
      EXPECT_NE(last.err().find("job id=" + id + " "), std::string::npos) << id << " never ran";
      ++missing;
    } else if (found->second > 1) {
      ++twice;
    }
  }
  EXPECT_TRUE(all_ran || missing > 0);
  EXPECT_GT(acknowledged.size(), static_cast<std::size_t>(kRounds));
  // Reported, not hidden: at-least-once means a job cut short by the kill runs again.
  std::cout << "kill -9 rounds: " << kRounds << ", acknowledged " << acknowledged.size() << ", ran "
            << runs.size() << ", ran more than once " << twice << ", never ran (out of attempts) "
            << missing << "\n";
  RecordProperty("acknowledged", static_cast<int>(acknowledged.size()));
  RecordProperty("ran_twice", static_cast<int>(twice));
}

TEST(SpoolPrograms, AStopLeavesTheQueuedJobsForTheNextStart) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string ran = dir.file("ran");
  const std::vector<std::string> slow = {"--exec", "sh", "-c",
                                         R"(echo "$SOCKECHO_JOB_ID" >> ")" + ran + "\"; sleep 0.3"};
  std::vector<std::string> ids;
  {
    ServerProcess server(spooled(spool, slow, {"--jobs", "1"}));
    for (int i = 0; i < 5; ++i) {
      ids.push_back(accepted_id(request("127.0.0.1", server.port(), "job")));
      ASSERT_FALSE(ids.back().empty());
    }
    server.signal(SIGTERM);
    EXPECT_EQ(server.wait(), 0) << server.err();
    EXPECT_NE(server.err().find("jobs: stopping running="), std::string::npos) << server.err();
  }
  const std::size_t before = lines_in(ran).size();
  EXPECT_GE(before, 1U);
  EXPECT_LT(before, ids.size()) << "the queued jobs did not run at the stop";
  ServerProcess again(spooled(spool, slow, {"--jobs", "1"}));
  EXPECT_TRUE(test::eventually([&] { return lines_in(ran).size() == ids.size(); }));
  again.signal(SIGTERM);
  EXPECT_EQ(again.wait(), 0) << again.err();
  EXPECT_NE(again.err().find("spool: dir="), std::string::npos) << again.err();
  EXPECT_EQ(lines_in(ran), std::set<std::string>(ids.begin(), ids.end()));
}

TEST(SpoolPrograms, ADamagedRecordIsSkippedAndTheOtherJobsRun) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string ran = dir.file("ran");
  {
    Spool writer = Spool::open(spool);
    for (const char* id : {"first", "second", "third"}) {
      writer.commit(SpoolAccepted{id, std::string(200, 'x'), {}, "127.0.0.1", {}});
    }
  }
  // Flip a byte in the middle of the spool: inside the second record.
  std::string file;
  for (const auto& entry : std::filesystem::directory_iterator(spool)) file = entry.path();
  ASSERT_FALSE(file.empty());
  std::string bytes = dir.read(file.substr(dir.file("").size()));
  // The records follow the 19-byte header; the file is zero-filled past them.
  const auto size = [](const char* id) {
    return encode_record(SpoolAccepted{id, std::string(200, 'x'), {}, "127.0.0.1", {}}).size();
  };
  const std::size_t middle = 19 + size("first") + size("second") / 2;
  ASSERT_GT(bytes.size(), middle);
  bytes[middle] = static_cast<char>(bytes[middle] ^ 0x5a);
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  ServerProcess server(spooled(spool, recording_job(ran)));
  EXPECT_TRUE(test::eventually([&] { return lines_in(ran).size() == 2; }));
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
  EXPECT_EQ(lines_in(ran), (std::set<std::string>{"first", "third"}));
  EXPECT_NE(server.err().find("damaged=1"), std::string::npos) << server.err();
  EXPECT_NE(server.err().find("record skipped file="), std::string::npos) << server.err();
}

TEST(SpoolPrograms, AnUnknownFormatStopsTheStartNamingTheFileAndLeavesItAsItWas) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  ASSERT_EQ(::mkdir(spool.c_str(), 0700), 0);
  std::string future = "sockecho-spool\n";
  future += std::string("\x63\x00\x00\x00", 4);  // version 99
  future += "records of a later sockecho";
  const std::string name = "spool/0000000000000001.spool";
  (void)dir.write(name, future);
  const test::RunResult r = test::run(
      {test::server_program(), "--port", "0", "--background", "--spool", spool, "--exec", "true"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("0000000000000001.spool"), std::string::npos) << r.err;
  EXPECT_EQ(dir.read(name), future);
}

TEST(SpoolPrograms, OneServerPerSpool) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  ServerProcess first(spooled(spool, {"--exec", "true"}));
  const test::RunResult second = test::run(
      {test::server_program(), "--port", "0", "--background", "--spool", spool, "--exec", "true"});
  EXPECT_EQ(second.status, 1) << second.err;
  EXPECT_NE(second.err.find("in use"), std::string::npos) << second.err;
  first.signal(SIGTERM);
  EXPECT_EQ(first.wait(), 0) << first.err();
}

TEST(SpoolPrograms, SpoolNeedsBackground) {
  const test::RunResult r =
      test::run({test::server_program(), "--spool", "/tmp/x", "--exec", "true"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--spool needs --background"), std::string::npos) << r.err;
}

// sockecho-server with `args`, run to its exit: for command lines it must refuse at start.
test::RunResult server_run(const std::vector<std::string>& args) {
  std::vector<std::string> argv{test::server_program()};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

// Refused at start: exit 2, the message on stderr after the program's name, nothing on stdout
// (no listener was ever bound, so no ready line).
void expect_usage_error(const std::vector<std::string>& args, const std::string& message) {
  std::string line;
  for (const std::string& arg : args) line += " " + arg;
  SCOPED_TRACE(line);
  const test::RunResult r = server_run(args);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(r.err.rfind("sockecho-server: " + message + "\n", 0), 0U) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(JobFlagsPrograms, EachJobFlagNeedsBackground) {
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--status", "127.0.0.1:0"},
           {"--status", "unix:/tmp/sockecho-never.sock"},
           {"--retry-delay", "1"},
           {"--max-attempts", "2"},
           {"--keep", "60"},
           {"--keep-max", "100"}}) {
    expect_usage_error({"--port", "0", flag, value, "--exec", "true"},
                       flag + " needs --background");
    // The equals form, and without --exec at all: still the flag that needs --background.
    std::string joined = flag;
    joined += "=";
    joined += value;
    expect_usage_error({"--port", "0", joined}, flag + " needs --background");
  }
}

TEST(JobFlagsPrograms, KeepZeroAndOutOfRangeValuesAreUsageErrors) {
  const std::vector<std::string> background = {"--port", "0", "--background"};
  const auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = background;
    args.insert(args.end(), more.begin(), more.end());
    args.insert(args.end(), {"--exec", "true"});
    return args;
  };
  expect_usage_error(with({"--keep", "0"}),
                     "--keep: '0' is not a number of seconds above 0 (e.g. 3600)");
  expect_usage_error(with({"--keep", "0.000"}),
                     "--keep: '0.000' is not a number of seconds above 0 (e.g. 3600)");
  expect_usage_error(with({"--max-attempts", "0"}),
                     "--max-attempts: '0' is not a whole number from 1 to 1000");
  expect_usage_error(with({"--keep-max", "0"}),
                     "--keep-max: '0' is not a whole number from 1 to 10000000");
  expect_usage_error(with({"--retry-delay", "3601"}),
                     "--retry-delay: '3601' is not a number of seconds from 0 to 3600");
  expect_usage_error(with({"--status", "localhost"}),
                     "--status: 'localhost' is not HOST:PORT or unix:PATH, such as "
                     "127.0.0.1:12388, [::1]:12388 or unix:/run/x.sock");
}

TEST(JobFlagsPrograms, UnixModeAndGroupNeedASocketFile) {
  const test::ScratchDir dir;
  const std::string status = "unix:" + dir.file("status.sock");
  expect_usage_error({"--port", "0", "--unix-mode", "0600"},
                     "--unix-mode and --unix-group need --unix or --status unix:PATH");
  expect_usage_error({"--port", "0", "--background", "--status", "127.0.0.1:0", "--unix-group",
                      "root", "--exec", "true"},
                     "--unix-mode and --unix-group need --unix or --status unix:PATH");
  expect_usage_error({"--port", "0", "--background", "--status", "unix:@sockecho-status",
                      "--unix-mode", "0600", "--exec", "true"},
                     "an abstract socket (--status unix:@NAME) has no file: no --unix-mode or "
                     "--unix-group");
  expect_usage_error({"--unix", "@sockecho-jobs", "--unix-mode", "0600"},
                     "an abstract socket (--unix @NAME) has no file: no --unix-mode or "
                     "--unix-group");
  // A socket file for the status listener alone is enough: the server starts.
  ServerProcess server(
      {"--background", "--status", status, "--unix-mode", "0600", "--exec", "true"});
  EXPECT_NE(server.port(), 0);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

// One system call as strace -f wrote it: its line number, its pid, and its text.
struct Traced {
  std::size_t line = 0;
  std::string text;
};

TEST(SpoolPrograms, NoJobIsAcknowledgedBeforeTheSyncThatCoversItHasReturned) {
  const std::optional<std::string> strace = test::installed("strace");
  if (!strace) GTEST_SKIP() << "strace is not installed (apt-get install strace)";
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string trace = dir.file("trace");
  // The server under strace: its ready line and log pass through. LeakSanitizer cannot work
  // under ptrace: in a sanitizer build its leak check is off for this one run.
  const char* asan = std::getenv("ASAN_OPTIONS");  // NOLINT(concurrency-mt-unsafe): no setenv here
  const std::string no_leak_check =
      "ASAN_OPTIONS=" + std::string(asan != nullptr ? asan : "") + ":detect_leaks=0";
  std::vector<std::string> argv = {"/usr/bin/env",
                                   no_leak_check,
                                   *strace,
                                   "-f",
                                   "-qq",
                                   "-s",
                                   "256",
                                   "-o",
                                   trace,
                                   "-e",
                                   "trace=write,writev,sendto,sendmsg,fdatasync,fsync",
                                   test::server_program(),
                                   "--port",
                                   "0"};
  for (const std::string& a : spooled(spool, {"--exec", "true"}, {"--jobs", "1"})) {
    argv.push_back(a);
  }
  test::Child server(argv);
  const std::optional<std::string> ready = server.stdout_line();
  ASSERT_TRUE(ready) << server.err();
  const std::uint16_t port = test::port_of(*ready);
  std::vector<std::string> ids;
  std::mutex ids_mutex;
  std::vector<std::thread> clients;
  clients.reserve(4);
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int n = 0; n < 10; ++n) {
        const std::string id = accepted_id(request("127.0.0.1", port, "job"));
        const std::lock_guard<std::mutex> lock(ids_mutex);
        ids.push_back(id);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  // The stop signal goes to sockecho-server, strace's child; strace ends with it.
  const std::vector<pid_t> traced = test::children_of(server.pid());
  ASSERT_EQ(traced.size(), 1U);
  ASSERT_EQ(::kill(traced.front(), SIGTERM), 0);
  ASSERT_EQ(server.wait(), 0) << server.err();

  // Where each job's record was written, where each sync began and returned, and where each
  // "accepted ID" was written to a socket, by line.
  std::ifstream in(trace);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  struct Sync {
    std::size_t began = 0;
    std::size_t returned = 0;
  };
  std::vector<Sync> syncs;
  std::map<std::string, Sync> open_syncs;  // by pid: a sync strace split over two lines
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::string pid = line.substr(0, line.find(' '));
    // strace pads the result: "fdatasync(8)            = 0".
    const bool zero = line.size() >= 3 && line.compare(line.size() - 3, 3, "= 0") == 0;
    const bool sync_call =
        line.find("fdatasync(") != std::string::npos || line.find(" fsync(") != std::string::npos;
    if (sync_call && line.find("<unfinished ...>") != std::string::npos) {
      open_syncs[pid] = Sync{i, 0};
    } else if (sync_call && zero) {
      syncs.push_back(Sync{i, i});
    } else if ((line.find("<... fdatasync resumed>") != std::string::npos ||
                line.find("<... fsync resumed>") != std::string::npos) &&
               zero && open_syncs.count(pid) > 0) {
      syncs.push_back(Sync{open_syncs[pid].began, i});
      open_syncs.erase(pid);
    }
  }
  ASSERT_FALSE(syncs.empty()) << "no sync seen";
  std::size_t checked = 0;
  for (const std::string& id : ids) {
    ASSERT_FALSE(id.empty());
    std::optional<std::size_t> record;
    std::optional<std::size_t> ack;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find(id) == std::string::npos) continue;
      if (lines[i].find("accepted " + id) != std::string::npos) {
        if (!ack) ack = i;
      } else if (!record && lines[i].find("write(") != std::string::npos) {
        record = i;
      }
    }
    ASSERT_TRUE(record) << id << ": no write of its record";
    ASSERT_TRUE(ack) << id << ": no acknowledgement";
    const bool covered = std::any_of(syncs.begin(), syncs.end(), [&](const Sync& s) {
      return s.began > *record && s.returned < *ack;
    });
    EXPECT_TRUE(covered) << id << ": acknowledged (line " << *ack << ") before a sync begun after "
                         << "its record (line " << *record << ") had returned";
    ++checked;
  }
  EXPECT_EQ(checked, 40U);
  std::cout << "ack after sync: " << checked << " jobs, " << syncs.size() << " syncs\n";
}

TEST(SpoolPrograms, AFullDiskIsBusyNeverAcceptedAndJobsAreAcceptedAgainOnceThereIsRoom) {
  // A small tmpfs, in a mount namespace of this test's own (root only; skipped otherwise).
  const test::ScratchDir dir;
  if (::unshare(CLONE_NEWNS) != 0) GTEST_SKIP() << "no mount namespace of the test's own (root)";
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=256k,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { (void)::umount2(path.c_str(), MNT_DETACH); }
  } unmount{dir.path()};
  const std::string spool = dir.file("spool");
  ServerProcess server(spooled(spool, {"--exec", "true"}));
  EXPECT_FALSE(accepted_id(request("127.0.0.1", server.port(), "before")).empty());
  // Fill what is left of the file system.
  {
    std::ofstream filler(dir.file("filler"), std::ios::binary);
    const std::string block(4096, 'f');
    for (int i = 0; i < 1024 && filler; ++i) {
      filler.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
  }
  // A record may still fit in the room left in the last page of the spool's file (then it is
  // on disk, rightly accepted); once one does not, every one after it is busy until there is room.
  int busy = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string answer = request("127.0.0.1", server.port(), std::string(2048, 'j'));
    if (busy > 0) {
      EXPECT_EQ(answer, "busy\n") << "accepted on a full disk, after a busy";
    }
    if (answer == "busy\n") ++busy;
  }
  EXPECT_GE(busy, 15);
  EXPECT_TRUE(server.wait_stderr("reason=spool")) << server.err();
  // Room again: accepted again, with no restart.
  ASSERT_EQ(::unlink(dir.file("filler").c_str()), 0);
  EXPECT_TRUE(test::eventually(
      [&] { return !accepted_id(request("127.0.0.1", server.port(), "after")).empty(); }));
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0) << server.err();
}

TEST(SpoolPrograms, ARunASecondStopSignalKilledRunsAgainAtTheNextStart) {
  const test::ScratchDir dir;
  const std::string spool = dir.file("spool");
  const std::string ran = dir.file("ran");
  // The first run says its attempt and would run a minute; the second says it and ends.
  const std::vector<std::string> job = {
      "--exec", "sh", "-c",
      R"(echo "$SOCKECHO_JOB_ID $SOCKECHO_JOB_ATTEMPT" >> ")" + ran +
          R"("; if [ "$SOCKECHO_JOB_ATTEMPT" = 1 ]; then exec sleep 60; fi)"};
  std::string id;
  {
    ServerProcess server(spooled(spool, job));
    id = accepted_id(request("127.0.0.1", server.port(), "job"));
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(test::eventually([&] { return lines_in(ran).count(id + " 1") > 0; }));
    server.signal(SIGTERM);
    ASSERT_TRUE(server.wait_stderr("jobs: stopping running=1")) << server.err();
    server.signal(SIGTERM);
    EXPECT_EQ(server.wait(), 128 + SIGTERM) << server.err();
  }
  ServerProcess again(spooled(spool, job));
  EXPECT_TRUE(test::eventually([&] { return lines_in(ran).count(id + " 2") > 0; }));
  again.signal(SIGTERM);
  EXPECT_EQ(again.wait(), 0) << again.err();
  EXPECT_NE(again.err().find("interrupted=1"), std::string::npos) << again.err();
}

}  // namespace
}  // namespace sockecho
