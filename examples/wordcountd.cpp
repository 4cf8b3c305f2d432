// wordcountd: a daemon of one's own on libsockecho. A web application sends it a text and
// half-closes; it answers with the counts of lines, words and bytes and the most frequent words:
//
//   lines=2 words=7 bytes=28
//   the 3
//   and 1
//
// Usage: wordcountd [--host HOST] [--port PORT] [--top N]
// Prints "listening on HOST:PORT" once ready; SIGINT/SIGTERM stop it cleanly. Started by systemd
// with a socket unit, it serves the socket it is given instead of binding one.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <sockecho/sockecho.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

struct Settings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 12388;
  std::size_t top = 5;
};

// Counts a text: words are runs of letters, digits and apostrophes, compared case-insensitively.
std::string count_words(std::string_view text, std::size_t top) {
  std::unordered_map<std::string, std::size_t> counts;
  std::size_t words = 0;
  std::string word;
  const auto flush = [&] {
    if (word.empty()) return;
    ++counts[word];
    ++words;
    word.clear();
  };
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) != 0 || c == '\'') {
      word += static_cast<char>(std::tolower(byte));
    } else {
      flush();
    }
  }
  flush();
  const auto lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) +
                     (!text.empty() && text.back() != '\n' ? 1 : 0);

  std::vector<std::pair<std::string, std::size_t>> ranked(counts.begin(), counts.end());
  const std::size_t shown = std::min(top, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(shown),
                    ranked.end(), [](const auto& a, const auto& b) {
                      return a.second != b.second ? a.second > b.second : a.first < b.first;
                    });
  std::string reply = "lines=" + std::to_string(lines) + " words=" + std::to_string(words) +
                      " bytes=" + std::to_string(text.size()) + "\n";
  for (std::size_t i = 0; i < shown; ++i) {
    reply += ranked[i].first + " " + std::to_string(ranked[i].second) + "\n";
  }
  return reply;
}

std::optional<Settings> parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) return std::nullopt;
    const char* value = argv[++i];
    try {
      if (flag == "--host") {
        s.host = value;
      } else if (flag == "--port") {
        s.port = sockecho::parse_port(value);
      } else if (flag == "--top") {
        s.top = std::stoul(value);
      } else {
        return std::nullopt;
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Settings> settings = parse(argc, argv);
  if (!settings) {
    (void)std::fprintf(stderr, "usage: wordcountd [--host HOST] [--port PORT] [--top N]\n");
    return 2;
  }
  sockecho::ServerOptions options;
  options.workers = 4;
  options.timeout = std::chrono::seconds(10);
  options.log = sockecho::Logger(2, sockecho::LogLevel::normal);
  const std::size_t top = settings->top;
  auto handler = [top](const sockecho::Request& request, sockecho::Reply& reply) {
    reply.append(count_words(request.bytes(), top));
  };
  try {
    std::optional<sockecho::Listener> listener = sockecho::inherited_listener();
    if (!listener) listener = sockecho::Listener::bind(settings->host, settings->port);
    sockecho::Limits limits;
    limits.max_bytes = std::size_t{8} << 20;
    sockecho::Server server(std::move(*listener), sockecho::echo_protocol(handler, limits),
                            options);
    const sockecho::StopOnSignals stop([&server] { server.stop(); });
    std::printf("listening on %s\n", server.address().to_string().c_str());
    (void)std::fflush(stdout);
    server.run();
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "wordcountd: %s\n", e.what());
    return 1;
  }
  return 0;
}
