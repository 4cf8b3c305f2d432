// shoutd: a daemon of one's own on sockecho::Daemon, which gives it everything sockecho-server
// has: the ready line, the log on stderr, the limits, socket activation, the stop on SIGINT,
// SIGTERM or SIGHUP once the requests in flight are answered, SIGUSR1's stats line. Its own part
// is the handler: each request comes back in upper case.
//
// Usage: shoutd [--port PORT]
#include <cctype>
#include <cstdio>
#include <exception>
#include <sockecho/sockecho.hpp>
#include <string>
#include <utility>

int main(int argc, char** argv) {
  try {
    sockecho::DaemonOptions options;
    options.port = argc == 3 && std::string(argv[1]) == "--port" ? sockecho::parse_port(argv[2])
                                                                 : 12389;
    options.options.workers = 8;
    options.limits.max_bytes = std::size_t{1} << 20;
    options.handler = [](const sockecho::Request& request, sockecho::Reply& reply) {
      std::string upper(request.bytes());
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      reply.append(upper);
    };
    sockecho::Daemon daemon(std::move(options));
    daemon.run([](const std::string& line) {
      std::printf("%s\n", line.c_str());
      (void)std::fflush(stdout);
    });
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "shoutd: %s\n", e.what());
    return 1;
  }
  return 0;
}
