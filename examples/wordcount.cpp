// wordcount: the client of wordcountd, in one library call. Sends a file (or standard input)
// and prints the counts.
//
// Usage: wordcount [--host HOST] [--port PORT] [FILE]
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sockecho/sockecho.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::uint16_t port = 12388;
  std::string path;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if ((arg == "--host" || arg == "--port") && i + 1 < argc) {
        const char* value = argv[++i];
        if (arg == "--host") {
          host = value;
        } else {
          port = sockecho::parse_port(value);
        }
      } else if (path.empty() && arg.substr(0, 2) != "--") {
        path = std::string(arg);
      } else {
        throw std::invalid_argument("unexpected argument " + std::string(arg));
      }
    }
  } catch (const std::invalid_argument& e) {
    (void)std::fprintf(
        stderr, "wordcount: %s\nusage: wordcount [--host HOST] [--port PORT] [FILE]\n", e.what());
    return 2;
  }

  std::ifstream file;
  if (!path.empty()) {
    file.open(path, std::ios::binary);
    if (!file) {
      (void)std::fprintf(stderr, "wordcount: cannot open %s\n", path.c_str());
      return 1;
    }
  }
  std::istream& in = path.empty() ? std::cin : file;
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};

  sockecho::RequestOptions options;
  options.timeout = std::chrono::seconds(10);
  try {
    const std::string reply = sockecho::request(host, port, text, options);
    const bool written = std::fwrite(reply.data(), 1, reply.size(), stdout) == reply.size();
    return written && std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const std::system_error& e) {  // "connect 127.0.0.1:12388: Connection refused"
    (void)std::fprintf(stderr, "wordcount: %s\n", e.what());
    return 1;
  }
}
