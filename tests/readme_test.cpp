// README.md and docs/ against the source tree: what a newcomer copies from them must work as it
// stands. The README is a front page of at most 200 lines with the half-close for both PHP APIs;
// the header table of docs/library.md names every public header, the PHP snippets are whole
// scripts that fail loudly, the C++ example's CMakeLists.txt is a whole project, and installing
// builds in a directory of its own. (docs_test runs the shell snippets; ReadmeTest.php the PHP.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sockecho {
namespace {

std::string read_doc(const std::string& name) {
  const std::string path = std::string(SOCKECHO_SOURCE_DIR) + "/" + name;
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string read_readme() { return read_doc("README.md"); }
std::string read_library() { return read_doc("docs/library.md"); }

// The lines of the section under the heading `heading` ("## From PHP"), up to the next heading
// of the same level or higher.
std::vector<std::string> section(const std::string& text, const std::string& heading) {
  std::istringstream in(text);
  std::vector<std::string> lines;
  bool inside = false;
  bool fence = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("```", 0) == 0) fence = !fence;
    if (!fence && line.rfind("## ", 0) == 0) {
      if (inside) break;
      inside = line == heading;
      continue;
    }
    if (inside) lines.push_back(line);
  }
  return lines;
}

struct Block {
  std::string language;  // what follows the opening ```
  std::string text;
};

// The fenced blocks among `lines`.
std::vector<Block> blocks(const std::vector<std::string>& lines) {
  std::vector<Block> out;
  bool fence = false;
  for (const std::string& line : lines) {
    if (line.rfind("```", 0) == 0) {
      fence = !fence;
      if (fence) out.push_back({line.substr(3), ""});
      continue;
    }
    if (fence) out.back().text += line + "\n";
  }
  return out;
}

// Every `NAME.hpp` in the first cell of a table row.
std::set<std::string> headers_in_table(const std::vector<std::string>& lines) {
  std::set<std::string> headers;
  for (const std::string& line : lines) {
    if (line.rfind("| `", 0) != 0) continue;
    const std::string cell = line.substr(0, line.find(" |", 1));
    for (std::size_t open = cell.find('`'); open != std::string::npos;
         open = cell.find('`', open + 1)) {
      const std::size_t close = cell.find('`', open + 1);
      if (close == std::string::npos) break;
      const std::string name = cell.substr(open + 1, close - open - 1);
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".hpp") == 0) headers.insert(name);
      open = close;
    }
  }
  return headers;
}

TEST(Readme, HeaderTableNamesEveryPublicHeader) {
  std::set<std::string> on_disk{"version.hpp"};  // generated into the build tree, installed too
  for (const auto& entry : std::filesystem::directory_iterator(std::string(SOCKECHO_SOURCE_DIR) +
                                                               "/include/sockecho")) {
    on_disk.insert(entry.path().filename().string());
  }
  const std::set<std::string> listed = headers_in_table(section(read_library(), "## The pieces"));
  EXPECT_EQ(listed, on_disk) << "the header table in docs/library.md's \"The pieces\" and "
                                "include/sockecho/ should name the same headers";
}

TEST(Readme, HeaderTableReaderFindsEveryNameInTheFirstCell) {
  EXPECT_EQ(headers_in_table({"| header | what |", "| `a.hpp`, `b.hpp` | uses `c.hpp` |",
                              "| `fd.hpp` | x |", "not a `row.hpp`"}),
            (std::set<std::string>{"a.hpp", "b.hpp", "fd.hpp"}));
}

// The text without its // comments, which may name what the code must not do.
std::string without_comments(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) out += line.substr(0, line.find("//")) + "\n";
  return out;
}

// Every line of a document, as section() gives a section's.
std::vector<std::string> all_lines(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The scripts a newcomer copies whole: the half-close fix and every PHP example. Each is a whole
// script (clients/php/tests/ReadmeTest.php runs them against real daemons); the first of each
// place shows how a failure ends the script.
TEST(Readme, PhpScriptsStartWithTheTagAndExitNonZeroOnFailure) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> places = {
      {"README: The protocol in brief", section(read_readme(), "## The protocol in brief")},
      {"README: Hand a slow job",
       section(read_readme(), "## Hand a slow job to the daemon from PHP")},
      {"docs/php.md", all_lines(read_doc("docs/php.md"))}};
  for (const auto& [place, lines] : places) {
    SCOPED_TRACE(place);
    std::vector<Block> php;
    for (Block& block : blocks(lines)) {
      if (block.language == "php") php.push_back(std::move(block));
    }
    ASSERT_FALSE(php.empty());
    for (const Block& block : php) {
      const std::string& text = block.text;
      EXPECT_EQ(text.rfind("<?php\n", 0), 0U) << "starts without <?php:\n" << text;
      const std::string code = without_comments(text);
      // die('text') and exit('text') print the text and exit with status 0.
      for (const std::string zero : {"die(", "exit('", "exit(\""}) {
        EXPECT_EQ(code.find(zero), std::string::npos) << zero << " exits 0 on failure:\n" << text;
      }
    }
    EXPECT_NE(without_comments(php.front().text).find("exit(1);"), std::string::npos)
        << php.front().text;
  }
}

// docs/php.md in the order a PHP developer needs it: submit a job, ask for it, read its result;
// the half-close with PHP streams and with the sockets extension; what to do on busy; the
// client's own page, which links back.
TEST(Readme, PhpPageShowsTheJobApiTheHalfCloseBusyAndTheClientsPageInThatOrder) {
  const std::string text = read_doc("docs/php.md");
  std::size_t at = 0;
  for (const std::string step :
       {"->submit(", "->status(", "->output", "stream_socket_shutdown($fp, STREAM_SHUT_WR)",
        "socket_shutdown($socket, 1)", "## On busy",
        "[clients/php/README.md](../clients/php/README.md)"}) {
    const std::size_t found = text.find(step, at);
    ASSERT_NE(found, std::string::npos)
        << "\"" << step << "\" missing, or before the step it follows";
    at = found + step.size();
  }
  std::ifstream client_readme(std::string(SOCKECHO_SOURCE_DIR) + "/clients/php/README.md");
  std::ostringstream client_text;
  client_text << client_readme.rdbuf();
  EXPECT_NE(client_text.str().find("../../docs/php.md"), std::string::npos)
      << "clients/php/README.md should link back to docs/php.md";
}

// The front page: short, with its table of contents, both commands, the half-close for both
// PHP APIs, a job submitted, asked about and read from PHP, and a link to each document.
TEST(Readme, IsAFrontPageThatLeadsToEachDocument) {
  const std::string text = read_readme();
  EXPECT_LE(all_lines(text).size(), 200U) << "README.md is a front page: at most 200 lines";
  for (const std::string part :
       {"## Contents", "```sh quickstart", "./build/tools/sockecho-client",
        "# build, then run every test", "socket_shutdown($socket, 1)",
        "stream_socket_shutdown($fp, STREAM_SHUT_WR)", "->submit(", "->status(", "->output",
        "(docs/protocol.md)", "(docs/php.md)", "(docs/operations.md)", "(docs/library.md)",
        "(bench/RESULTS.md)", "apt-get install -y --no-install-recommends"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " missing from README.md";
  }
}

TEST(Readme, CppExampleShowsAWholeCMakeProject) {
  const std::vector<Block> cmake = blocks(section(read_library(), "## A daemon of your own"));
  ASSERT_FALSE(cmake.empty());
  ASSERT_EQ(cmake.front().language, "cmake");
  const std::string& text = cmake.front().text;
  EXPECT_EQ(text.rfind("cmake_minimum_required(", 0), 0U) << text;
  for (const std::string call : {"project(", "find_package(sockecho", "add_executable(mydaemon",
                                 "target_link_libraries(mydaemon"}) {
    EXPECT_NE(text.find(call), std::string::npos) << call << " missing from:\n" << text;
  }
}

TEST(Readme, InstallingBuildsInADirectoryOfItsOwn) {
  const std::vector<Block> sh = blocks(section(read_library(), "## Installing"));
  ASSERT_FALSE(sh.empty());
  const std::string& text = sh.front().text;
  EXPECT_NE(text.find("cmake --install "), std::string::npos) << text;
  // `build` is the test command's directory, configured for the tests.
  EXPECT_EQ(text.find("-B build "), std::string::npos) << text;
  EXPECT_EQ(text.find("--install build\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace sockecho
