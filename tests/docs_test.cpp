// The snippets of README.md, CONTRIBUTING.md and docs/*.md, run as a reader would run them.
// Every ```sh block is a script run by bash (-euo pipefail) in a scratch directory where `build`
// is this build and the source tree's files are at hand, with the programs' directory first on
// PATH (as if installed); only addresses change, as clients/php/tests/ReadmeTest.php changes
// them for the PHP snippets: 12387, 12388, 12389, 12390 and 8080 become free ports,
// /run/sockecho a scratch directory. What the block starts in the background is stopped when it
// ends.
//
// The second word of a fence says what cannot run here, and the block is then checked for syntax
// only (bash -n): `sh build` (builds, installs or runs ctest: what CI's steps run; a ctest run
// inside a test would overwrite the log tests/run reads), `sh systemd` (needs a live systemd),
// `sh root` (changes the machine), `sh test-command` (the test command itself, which .ci/run
// checks against what it runs, and which CONTRIBUTING.md must show as the README does).
// `sh quickstart`, the README's first command, runs as shown in the source tree itself when this
// build is ./build (its cmake commands then find everything built). Configuration fragments go
// to their own tool: ```haproxy to `haproxy -c`, ```ini fail2ban to fail2ban-regex, ```yaml
// prometheus to `promtool check config`.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/listener.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

const std::string kSource = SOCKECHO_SOURCE_DIR;
const std::string kBinary = SOCKECHO_BINARY_DIR;
const std::string kTools = SOCKECHO_TOOLS_DIR;

struct Block {
  std::string language;  // the info string's first word
  std::string mark;      // its second word, if any
  std::string text;
  std::size_t line = 0;  // of the opening fence
};

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// Every fenced block of a Markdown file; a fence may be indented (inside a list item).
std::vector<Block> blocks_of(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<Block> out;
  bool fence = false;
  std::size_t indent = 0;
  std::size_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const std::size_t first = line.find_first_not_of(' ');
    if (first != std::string::npos && line.compare(first, 3, "```") == 0) {
      fence = !fence;
      if (fence) {
        indent = first;
        std::istringstream info(line.substr(first + 3));
        Block block;
        info >> block.language >> block.mark;
        block.line = number;
        out.push_back(block);
      }
      continue;
    }
    if (fence) out.back().text += (line.size() >= indent ? line.substr(indent) : line) + "\n";
  }
  return out;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at)) {
    text.replace(at, from.size(), to);
    at += to.size();
  }
  return text;
}

std::uint16_t free_port() { return Listener::bind("127.0.0.1", 0).address().port(); }

bool port_taken(std::uint16_t port) {
  try {
    (void)Listener::bind("127.0.0.1", port);
    return false;
  } catch (const std::system_error&) {
    return true;
  }
}

// Runs `script` with bash in `directory`, the programs first on PATH, in a process group of its
// own that is killed once the script ends (servers it left running), within 120 s.
test::RunResult run_script(const std::string& directory, const std::string& script) {
  const std::string driver =
      "cd \"$1\" || exit 99; export PATH=\"$2:$PATH\"; "
      "setsid timeout -k 5 100 bash -euo pipefail -c \"$3\" snippet & pid=$!; "
      "wait $pid; status=$?; kill -TERM -- -$pid 2>/dev/null; exit $status";
  return test::run({"/bin/bash", "-c", driver, "driver", directory, kTools, script});
}

// A scratch directory with `build` (this build) and the source tree's own entries beside it.
class Workspace {
 public:
  Workspace() {
    for (const auto& entry : std::filesystem::directory_iterator(kSource)) {
      const std::string name = entry.path().filename().string();
      if (name == ".git" || name.rfind("build", 0) == 0) continue;
      std::filesystem::create_symlink(entry.path(), dir_.file(name));
    }
    std::filesystem::create_symlink(kBinary, dir_.file("build"));
    std::filesystem::create_directories(dir_.file("run"));
  }
  [[nodiscard]] const std::string& path() const { return dir_.path(); }
  // The block's text with its addresses made this run's.
  [[nodiscard]] std::string localized(std::string text) const {
    for (const std::string port : {"12387", "12388", "12389", "12390", "8080"}) {
      text = replaced(text, port, std::to_string(ports_.at(port)));
    }
    return replaced(text, "/run/sockecho", dir_.file("run/sockecho"));
  }

 private:
  test::ScratchDir dir_;
  std::map<std::string, std::uint16_t> ports_ = {{"12387", free_port()},
                                                 {"12388", free_port()},
                                                 {"12389", free_port()},
                                                 {"12390", free_port()},
                                                 {"8080", free_port()}};
};

// The tools a block needs beyond bash and the programs, by the words it runs.
std::optional<std::string> missing_tool(const std::string& text) {
  for (const std::string tool : {"php", "systemd-socket-activate"}) {
    if ((text.find(tool + " ") != std::string::npos) && !test::installed(tool)) return tool;
  }
  return std::nullopt;
}

void syntax_only(const Block& block, const std::string& where) {
  const test::RunResult r = test::run({"/bin/bash", "-n", "-c", block.text});
  EXPECT_EQ(r.status, 0) << where << ": not valid shell: " << r.err << block.text;
}

void check_haproxy(const Block& block, const std::string& where, const Workspace& space) {
  const std::optional<std::string> haproxy = test::installed("haproxy");
  if (!haproxy) return;
  std::string config = block.text;
  // The TLS frontend names a certificate and a CA: a throwaway pair, made here.
  if (config.find(".pem") != std::string::npos) {
    const std::string pem = space.path() + "/tls.pem";
    const std::string make_pair =
        "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=sockecho -days 1 "
        "-keyout \"$1.key\" -out \"$1.crt\" 2>/dev/null && cat \"$1.crt\" \"$1.key\" > \"$1\"";
    const test::RunResult made = test::run({"/bin/sh", "-c", make_pair, "sh", pem});
    if (made.status != 0) return;  // no openssl: the fragment is checked where it is installed
    config = replaced(replaced(config, "/etc/haproxy/sockecho.pem", pem),
                      "/etc/haproxy/clients-ca.pem", pem + ".crt");
  }
  const std::string file = space.path() + "/haproxy.cfg";
  std::ofstream(file) << config;
  const test::RunResult r = test::run({*haproxy, "-c", "-f", file});
  // A fragment that adds to the recipe before it (the draining one: health checks on the
  // backends) has no listener of its own: valid, and haproxy says so with exit status 2.
  const bool fragment = r.status == 2 && r.out.find(
                                             "Configuration file has no error but will "
                                             "not start (no listener)") != std::string::npos;
  EXPECT_TRUE(r.status == 0 || fragment) << where << ": haproxy -c: " << r.out << r.err << config;
}

void check_fail2ban(const Block& block, const std::string& where, const Workspace& space) {
  const std::optional<std::string> tool = test::installed("fail2ban-regex");
  if (!tool) return;  // hostile_programs_test checks the filter's regex without it
  const std::string file = space.path() + "/sockecho.conf";
  std::ofstream(file) << block.text;
  const test::RunResult r =
      test::run({*tool,
                 "2026-12-01T10:00:00.123Z conn peer=203.0.113.7:51022 in=0 out=0 ms=0.004 "
                 "outcome=refused reason=per_source",
                 file});
  EXPECT_EQ(r.status, 0) << where << ": " << r.err;
  EXPECT_NE(r.out.find("1 matched"), std::string::npos) << where << ": " << r.out;
}

void check_prometheus(const Block& block, const std::string& where, const Workspace& space) {
  const std::optional<std::string> promtool = test::installed("promtool");
  if (!promtool) return;
  const std::string file = space.path() + "/prometheus.yml";
  std::ofstream(file) << block.text;
  const test::RunResult r = test::run({*promtool, "check", "config", file});
  EXPECT_EQ(r.status, 0) << where << ": " << r.out << r.err;
}

// stunnel has no offline check of its configuration: each line is a section, a comment or a
// `key = value` its manual names.
void check_stunnel(const Block& block, const std::string& where) {
  std::istringstream in(block.text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == ';' || (line[0] == '[' && line.back() == ']')) continue;
    const std::string key = line.substr(0, line.find_first_of(" ="));
    EXPECT_TRUE(key == "accept" || key == "connect" || key == "cert" || key == "CAfile" ||
                key == "verifyChain")
        << where << ": " << line;
    EXPECT_NE(line.find('='), std::string::npos) << where << ": " << line;
  }
}

// Every block of one document, each as its fence says.
void check_document(const std::string& relative) {
  const Workspace space;
  std::vector<std::string> not_run;
  std::size_t ran = 0;
  std::string path = kSource;
  path += "/" + relative;
  for (const Block& block : blocks_of(path)) {
    std::string where = relative;
    where += ":" + std::to_string(block.line);
    SCOPED_TRACE(where);
    if (block.language == "haproxy") check_haproxy(block, where, space);
    if (block.language == "ini" && block.mark == "fail2ban") check_fail2ban(block, where, space);
    if (block.language == "ini" && block.mark == "stunnel") check_stunnel(block, where);
    if (block.language == "yaml" && block.mark == "prometheus") {
      check_prometheus(block, where, space);
    }
    if (block.language != "sh") continue;
    if (block.mark == "build" || block.mark == "systemd" || block.mark == "root" ||
        block.mark == "test-command") {
      syntax_only(block, where);
      continue;
    }
    ASSERT_TRUE(block.mark.empty() || block.mark == "quickstart")
        << where << ": unknown mark '" << block.mark << "'";
    if (const std::optional<std::string> tool = missing_tool(block.text)) {
      syntax_only(block, where);
      not_run.push_back(where + " (needs " + *tool + ")");
      continue;
    }
    std::string directory = space.path();
    std::string text = space.localized(block.text);
    if (block.mark == "quickstart") {
      syntax_only(block, where);
      if (std::filesystem::weakly_canonical(kBinary) !=
          std::filesystem::weakly_canonical(kSource + "/build")) {
        not_run.push_back(where + " (builds in ./build; this build is elsewhere)");
        continue;
      }
      if (port_taken(12387)) {
        not_run.push_back(where + " (uses port 12387, which something on this machine holds)");
        continue;
      }
      directory = kSource;
      text = block.text;  // as shown, on the default port
    }
    const test::RunResult r = run_script(directory, text);
    ++ran;
    EXPECT_EQ(r.status, 0) << where << ": exit status " << r.status << "\n--- the block:\n"
                           << text << "--- stdout:\n"
                           << r.out << "--- stderr:\n"
                           << r.err;
  }
  if (!not_run.empty()) {
    std::string list;
    for (const std::string& one : not_run) list += " " + one;
    GTEST_SKIP() << ran << " blocks ran; not run:" << list;
  }
}

TEST(Docs, BlocksAreFoundWithTheirMarks) {
  const std::vector<Block> blocks = blocks_of(kSource + "/README.md");
  ASSERT_FALSE(blocks.empty());
  bool quickstart = false;
  for (const Block& block : blocks) quickstart = quickstart || block.mark == "quickstart";
  EXPECT_TRUE(quickstart) << "the README's first command is marked sh quickstart";
}

// The test command of a document: the last line of its `sh test-command` block.
std::string test_command_of(const std::string& relative) {
  std::string path = kSource;
  path += "/" + relative;
  for (const Block& block : blocks_of(path)) {
    if (block.language != "sh" || block.mark != "test-command") continue;
    std::string last;
    std::istringstream in(block.text);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] != '#') last = line;
    }
    return last;
  }
  return {};
}

// Every test a `ctest -R 'REGEX'` of `text` names, as "executable.Suite.Name" with the escapes
// and anchors of the regular expression taken out.
std::vector<std::string> ctest_selections(const std::string& text) {
  std::vector<std::string> out;
  const std::string flag = "-R '";
  for (std::size_t at = text.find(flag); at != std::string::npos; at = text.find(flag, at)) {
    at += flag.size();
    const std::size_t end = text.find('\'', at);
    if (end == std::string::npos) break;
    std::string name;
    for (const char c : text.substr(at, end - at)) {
      if (c != '\\' && c != '^' && c != '$') name += c;
    }
    out.push_back(name);
  }
  return out;
}

// CONTRIBUTING.md's blocks build, run ctest or rewrite the sources: each is checked for syntax;
// its test command is the README's, and every test its ctest lines select exists.
TEST(Docs, ContributingSnippetsAreValidAndNameRealTests) {
  check_document("CONTRIBUTING.md");
  const std::string command = test_command_of("README.md");
  ASSERT_FALSE(command.empty()) << "the README has a sh test-command block";
  EXPECT_EQ(test_command_of("CONTRIBUTING.md"), command);
  std::string text;
  for (const Block& block : blocks_of(kSource + "/CONTRIBUTING.md")) text += block.text;
  const std::vector<std::string> selections = ctest_selections(text);
  EXPECT_FALSE(selections.empty()) << "CONTRIBUTING.md shows how to run one test";
  for (const std::string& selection : selections) {
    // "server_test.Server.RecordsEachConnection": the executable, then a prefix of its names.
    const std::string executable = selection.substr(0, selection.find('.'));
    const std::string prefix =
        selection.find('.') == std::string::npos ? "" : selection.substr(selection.find('.') + 1);
    std::string program = kBinary;
    program += "/tests/" + executable;
    const test::RunResult listed = test::run({program, "--gtest_list_tests"});
    ASSERT_EQ(listed.status, 0) << selection << ": no test executable " << executable;
    // --gtest_list_tests prints "Suite." lines, each followed by its "  Name" lines.
    std::istringstream in(listed.out);
    std::string suite;
    bool found = false;
    for (std::string line; std::getline(in, line) && !found;) {
      if (line.empty()) continue;
      if (line[0] != ' ') {
        suite = line;
        continue;
      }
      const std::string name = suite + line.substr(line.find_first_not_of(' '));
      found = name.rfind(prefix, 0) == 0;
    }
    EXPECT_TRUE(found) << "CONTRIBUTING.md selects " << selection << ", which names no test";
  }
}

TEST(Docs, ReadmeSnippetsRunAsShown) { check_document("README.md"); }
TEST(Docs, ProtocolSnippetsRunAsShown) { check_document("docs/protocol.md"); }
TEST(Docs, PhpSnippetsRunAsShown) { check_document("docs/php.md"); }
TEST(Docs, OperationsSnippetsRunAsShown) { check_document("docs/operations.md"); }
TEST(Docs, LibrarySnippetsRunAsShown) { check_document("docs/library.md"); }

}  // namespace
}  // namespace sockecho
