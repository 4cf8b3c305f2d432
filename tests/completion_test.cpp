// The bash completions in completions/, run by bash as it would run them at a prompt: the words
// of the command line in COMP_WORDS, the word being completed at COMP_CWORD.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "programs.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

const std::string kBash = "/bin/bash";

std::string completion_file(const std::string& program) {
  return std::string(SOCKECHO_SOURCE_DIR) + "/completions/" + program;
}

// Quotes a word for bash.
std::string quoted(const std::string& word) {
  std::string out = "'";
  for (const char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// What the completion function registered for `program` offers for the last of `words`, sorted.
std::vector<std::string> complete(const std::string& program, const std::vector<std::string>& words,
                                  const std::string& directory = ".") {
  std::string script = "set -u; cd " + quoted(directory) + " || exit 9; source " +
                       quoted(completion_file(program)) + " || exit 9; COMP_WORDS=(" +
                       quoted(program);
  for (const std::string& word : words) script += " " + quoted(word);
  script += "); COMP_CWORD=" + std::to_string(words.size()) +
            "; COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE};"
            // The function complete -p names, as bash would look it up.
            " spec=$(complete -p " +
            quoted(program) +
            ") || exit 8;"
            " function=${spec#*-F }; function=${function%% *};"
            " \"$function\"; printf '%s\\n' \"${COMPREPLY[@]}\"";
  const test::RunResult result = test::run({kBash, "-c", script});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.err, "");
  std::vector<std::string> offered;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) offered.push_back(line);
  }
  std::sort(offered.begin(), offered.end());
  return offered;
}

std::vector<std::string> sorted_help_options(const std::string& path) {
  const test::RunResult help = test::run({path, "--help"});
  EXPECT_EQ(help.status, 0);
  std::vector<std::string> options = test::help_options(help.out);
  std::sort(options.begin(), options.end());
  return options;
}

class Completion : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kBash.c_str(), X_OK) != 0) GTEST_SKIP() << "no bash";
  }
};

TEST_F(Completion, ServerOffersExactlyTheOptionsOfItsHelp) {
  const std::vector<std::string> help = sorted_help_options(test::server_program());
  ASSERT_GE(help.size(), 5U);
  EXPECT_EQ(complete("sockecho-server", {"--"}), help)
      << "completions/sockecho-server and `sockecho-server --help` list different options";
  EXPECT_EQ(complete("sockecho-server", {""}), help);
}

TEST_F(Completion, ClientOffersExactlyTheOptionsOfItsHelp) {
  const std::vector<std::string> help = sorted_help_options(test::client_program());
  ASSERT_GE(help.size(), 5U);
  EXPECT_EQ(complete("sockecho-client", {"--"}), help)
      << "completions/sockecho-client and `sockecho-client --help` list different options";
}

TEST_F(Completion, CompletesAPrefix) {
  EXPECT_EQ(complete("sockecho-server", {"--port", "0", "--m"}),
            (std::vector<std::string>{"--max-attempts", "--max-bytes", "--max-connections",
                                      "--max-output", "--max-per-source", "--max-queued-per-source",
                                      "--max-total-bytes", "--metrics", "--mode"}));
  EXPECT_EQ(complete("sockecho-client", {"--q"}), (std::vector<std::string>{"--quiet"}));
}

TEST_F(Completion, OffersTheModes) {
  EXPECT_EQ(complete("sockecho-server", {"--mode", ""}),
            (std::vector<std::string>{"echo", "line"}));
  EXPECT_EQ(complete("sockecho-client", {"--mode", "l"}), (std::vector<std::string>{"line"}));
  // "--mode=l" reaches the function as three words: bash splits at '='.
  EXPECT_EQ(complete("sockecho-server", {"--mode", "=", "l"}), (std::vector<std::string>{"line"}));
  EXPECT_EQ(complete("sockecho-server", {"--mode", "="}),
            (std::vector<std::string>{"echo", "line"}));
}

TEST_F(Completion, OffersNothingWhereAValueOfTheUsersOwnIsDue) {
  EXPECT_TRUE(complete("sockecho-server", {"--port", ""}).empty());
  EXPECT_TRUE(complete("sockecho-server", {"--max-bytes", ""}).empty());
  // After --exec PROGRAM, every word is the program's: files, never our flags.
  EXPECT_TRUE(complete("sockecho-server", {"--exec", "cat", "--"}).empty());
  EXPECT_FALSE(complete("sockecho-server", {"--exec", "ca"}).empty()) << "commands on PATH";
  EXPECT_TRUE(complete("sockecho-client", {"--send", ""}).empty());
  for (const std::string flag :
       {"--status", "--retry-delay", "--max-attempts", "--keep", "--keep-max"}) {
    EXPECT_TRUE(complete("sockecho-server", {"--background", flag, ""}).empty()) << flag;
  }
}

TEST_F(Completion, SpoolCompletesDirectoriesOnly) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("sockecho-completion-spool-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "spool");
  std::ofstream(dir / "spool.txt") << "x";
  EXPECT_EQ(complete("sockecho-server", {"--background", "--spool", "sp"}, dir.string()),
            (std::vector<std::string>{"spool"}));
  std::filesystem::remove_all(dir);
}

// `--exec php job.php`: the program's arguments are usually a script's path.
TEST_F(Completion, AfterExecProgramCompletesFiles) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("sockecho-completion-exec-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "jobs");
  std::ofstream(dir / "job.php") << "<?php";
  std::ofstream(dir / "other.txt") << "x";
  EXPECT_EQ(complete("sockecho-server", {"--background", "--exec", "php", "j"}, dir.string()),
            (std::vector<std::string>{"job.php", "jobs"}));
  EXPECT_EQ(complete("sockecho-server", {"--exec", "php", "job.php", "o"}, dir.string()),
            (std::vector<std::string>{"other.txt"}))
      << "every argument after the program";
  std::filesystem::remove_all(dir);
}

TEST_F(Completion, OffersLoopbackAddressesForHost) {
  const std::vector<std::string> offered = complete("sockecho-server", {"--host", "127."});
  EXPECT_NE(std::find(offered.begin(), offered.end(), "127.0.0.1"), offered.end());
}

TEST_F(Completion, ClientFileCompletesPathsAndStdin) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("sockecho-completion-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "job.json") << "{}";
  std::ofstream(dir / "jobs.txt") << "x";
  EXPECT_EQ(complete("sockecho-client", {"--file", "job"}, dir.string()),
            (std::vector<std::string>{"job.json", "jobs.txt"}));
  const std::vector<std::string> all = complete("sockecho-client", {"--file", ""}, dir.string());
  EXPECT_NE(std::find(all.begin(), all.end(), "-"), all.end()) << "'-' reads stdin";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sockecho
