// The man pages in man/ against the programs: the same options as --help, the project's version,
// and clean formatting.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "programs.hpp"
#include "sockecho/version.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

std::string man_page_path(const std::string& program) {
  return std::string(SOCKECHO_SOURCE_DIR) + "/man/" + program + ".1";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

// roff writes a minus as "\-"; plain text is easier to match.
std::string plain(std::string text) {
  for (std::size_t at = text.find("\\-"); at != std::string::npos; at = text.find("\\-", at)) {
    text.erase(at, 1);
  }
  return text;
}

// Every "--name" in a line, name being a lower-case letter, then letters and '-'.
std::vector<std::string> long_options_in(const std::string& text) {
  const std::string line = plain(text);
  const auto is_name_char = [](char c) { return (c >= 'a' && c <= 'z') || c == '-'; };
  std::vector<std::string> found;
  for (std::size_t at = line.find("--"); at != std::string::npos; at = line.find("--", at)) {
    std::size_t end = at + 2;
    if (end < line.size() && line[end] >= 'a' && line[end] <= 'z') {
      while (end < line.size() && is_name_char(line[end])) ++end;
      found.push_back(line.substr(at, end - at));
    }
    at = end;
  }
  return found;
}

// The lines of one section, from ".SH NAME" to the next ".SH".
std::vector<std::string> section(const std::vector<std::string>& page, const std::string& name) {
  std::vector<std::string> lines;
  bool inside = false;
  for (const std::string& line : page) {
    if (line.rfind(".SH ", 0) == 0) {
      inside = line == ".SH " + name;
      continue;
    }
    if (inside) lines.push_back(line);
  }
  return lines;
}

// The options the OPTIONS section documents: the first long option on each .TP entry's tag line.
std::vector<std::string> documented_options(const std::vector<std::string>& page) {
  const std::vector<std::string> options_section = section(page, "OPTIONS");
  std::vector<std::string> documented;
  for (std::size_t i = 0; i + 1 < options_section.size(); ++i) {
    if (options_section[i] != ".TP") continue;
    const std::vector<std::string> tag = long_options_in(options_section[i + 1]);
    if (!tag.empty()) documented.push_back(tag.front());
  }
  return documented;
}

std::vector<std::string> help_options_of(const std::string& program) {
  const std::string path =
      program == "sockecho-server" ? test::server_program() : test::client_program();
  const test::RunResult help = test::run({path, "--help"});
  EXPECT_EQ(help.status, 0);
  return test::help_options(help.out);
}

std::string difference(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::string missing;
  for (const std::string& option : a) {
    if (std::find(b.begin(), b.end(), option) == b.end()) missing += " " + option;
  }
  return missing;
}

void expect_same_options(const std::string& program) {
  const std::vector<std::string> in_help = help_options_of(program);
  const std::vector<std::string> in_man = documented_options(read_lines(man_page_path(program)));
  ASSERT_GE(in_help.size(), 5U) << "could not read the options of " << program << " --help";
  EXPECT_EQ(difference(in_help, in_man), "")
      << "in `" << program << " --help` but not in the OPTIONS of man/" << program << ".1";
  EXPECT_EQ(difference(in_man, in_help), "")
      << "in the OPTIONS of man/" << program << ".1 but not in `" << program << " --help`";
}

void expect_synopsis_names_every_option(const std::string& program) {
  std::string synopsis;
  for (const std::string& line : section(read_lines(man_page_path(program)), "SYNOPSIS")) {
    synopsis += " " + line;
  }
  std::string missing;
  for (const std::string& option : help_options_of(program)) {
    const std::vector<std::string> named = long_options_in(synopsis);
    if (std::find(named.begin(), named.end(), option) == named.end()) missing += " " + option;
  }
  EXPECT_EQ(missing, "") << "in `" << program << " --help` but not in the SYNOPSIS of man/"
                         << program << ".1";
}

TEST(ManPage, ServerDocumentsExactlyTheOptionsOfItsHelp) { expect_same_options("sockecho-server"); }

TEST(ManPage, ClientDocumentsExactlyTheOptionsOfItsHelp) { expect_same_options("sockecho-client"); }

// The man pages are the one flag reference; where the README and docs/ show a command line of
// either program, every flag on it must be one that program's --help has (a renamed or dropped
// flag fails here, as it does in the man pages and the completions). Only lines that run the
// program are read: prose may name cmake's or haproxy's flags.
TEST(ManPage, EveryFlagTheDocumentsGiveEitherProgramIsInItsHelp) {
  const std::vector<std::string> server = help_options_of("sockecho-server");
  const std::vector<std::string> client = help_options_of("sockecho-client");
  const auto has = [](const std::vector<std::string>& options, const std::string& option) {
    return std::find(options.begin(), options.end(), option) != options.end();
  };
  std::vector<std::string> documents = {std::string(SOCKECHO_SOURCE_DIR) + "/README.md"};
  for (const std::string name : {"protocol", "php", "operations", "library"}) {
    documents.push_back(std::string(SOCKECHO_SOURCE_DIR) + "/docs/" + name + ".md");
  }
  std::size_t checked = 0;
  for (const std::string& document : documents) {
    bool fence = false;
    const std::vector<std::string> lines = read_lines(document);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const std::string& line = lines[i];
      if (line.find("```") != std::string::npos) fence = !fence;
      if (!fence) continue;
      // A command line of one program; a continued line ("\\" at its end) is the same one's.
      std::string command = line;
      for (std::size_t j = i; j + 1 < lines.size() && !lines[j].empty() && lines[j].back() == '\\';
           ++j) {
        command += " " + lines[j + 1];
      }
      const std::size_t server_at = command.find("sockecho-server ");
      const std::size_t client_at = command.find("sockecho-client ");
      if (server_at == std::string::npos && client_at == std::string::npos) continue;
      // Up to the first shell separator after it: "sockecho-server ... & sleep 1".
      const bool is_server = server_at < client_at;
      std::string words = command.substr(is_server ? server_at : client_at);
      if (const std::size_t end = words.find_first_of("&|;#"); end != std::string::npos) {
        words.resize(end);
      }
      // After --exec the words are the program's.
      if (const std::size_t exec = words.find("--exec "); exec != std::string::npos) {
        words.resize(exec + 6);
      }
      for (const std::string& option : long_options_in(words)) {
        ++checked;
        EXPECT_TRUE(has(is_server ? server : client, option))
            << document << ":" << i + 1 << ": " << option << " is not an option of "
            << (is_server ? "sockecho-server" : "sockecho-client") << "'s --help: " << line;
      }
    }
  }
  EXPECT_GE(checked, 30U) << "the documents show the programs' command lines";
}

TEST(ManPage, SynopsesNameEveryOption) {
  expect_synopsis_names_every_option("sockecho-server");
  expect_synopsis_names_every_option("sockecho-client");
}

TEST(ManPage, OptionExtractionSeesRoffMinusSigns) {
  EXPECT_EQ(documented_options({".SH OPTIONS", ".TP", ".BI \\-\\-max\\-bytes \" N\"", "text", ".TP",
                                ".BR \\-\\-help \", \" \\-h", ".SH NEXT", ".TP", ".B \\-\\-x"}),
            (std::vector<std::string>{"--max-bytes", "--help"}));
  EXPECT_EQ(test::help_options("Usage: x\n  --host HOST   where\n                --not-this\n"
                               "  --quiet            no lines\n"
                               "  -h, --help         show this help and exit\n"
                               "  -q  --not-this-either\n"),
            (std::vector<std::string>{"--host", "--quiet", "--help"}));
}

TEST(ManPage, TitleLinesNameTheProjectVersion) {
  for (const std::string program : {"sockecho-server", "sockecho-client"}) {
    const std::vector<std::string> page = read_lines(man_page_path(program));
    const auto title = std::find_if(page.begin(), page.end(), [](const std::string& line) {
      return line.rfind(".TH ", 0) == 0;
    });
    ASSERT_NE(title, page.end()) << program;
    EXPECT_NE(title->find(std::string("\"sockecho ") + kVersion + "\""), std::string::npos)
        << *title << " should name sockecho " << kVersion;
  }
}

TEST(ManPage, PagesFormatWithoutWarnings) {
  if (::access("/usr/bin/groff", X_OK) != 0) {
    GTEST_SKIP() << "groff is not installed (Debian: groff-base)";
  }
  for (const std::string program : {"sockecho-server", "sockecho-client"}) {
    // -ww: every warning; -z: format, print nothing; man(7) macros, UTF-8 output as man uses.
    const test::RunResult result =
        test::run({"/usr/bin/groff", "-man", "-Tutf8", "-ww", "-z", man_page_path(program)});
    EXPECT_EQ(result.status, 0) << program;
    EXPECT_EQ(result.err, "") << program;
  }
}

}  // namespace
}  // namespace sockecho
