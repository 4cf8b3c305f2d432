// sockecho-server: the daemon. Flags in, library calls, one-line errors and exit codes out.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "options.hpp"
#include "sockecho/sockecho.hpp"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int serve(const sockecho::cli::ServerSettings& settings) {
  sockecho::ListenOptions listen;
  listen.backlog = settings.backlog;
  listen.reuse_port = settings.reuse_port;
  // Connections inherit the timeout from the listening socket: no system call per connection.
  listen.connection_timeout = settings.options.timeout;
  sockecho::Listener listener = sockecho::Listener::bind(settings.host, settings.port, listen);

  sockecho::ServerOptions options = settings.options;
  options.log = sockecho::Logger(STDERR_FILENO, settings.log_level);
  sockecho::Server server(std::move(listener), sockecho::prefix_handler(settings.prefix),
                          std::move(options));
  // Before run() starts the worker threads, so they inherit the blocked signals.
  const sockecho::StopOnSignals stop_on_signals(server);
  sockecho::cli::print(STDOUT_FILENO, "listening on " + server.address().to_string() + "\n");
  server.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A closed stdout or stderr must cost a lost line, never the daemon.
  (void)std::signal(SIGPIPE, SIG_IGN);
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  sockecho::cli::ServerSettings settings;
  try {
    settings = sockecho::cli::parse_server_args(args);
  } catch (const sockecho::cli::UsageError& e) {
    sockecho::cli::print(STDERR_FILENO,
                         std::string("sockecho-server: ") + e.what() +
                             "\nTry 'sockecho-server --help' for more information.\n");
    return kExitUsage;
  }
  if (settings.help) {
    sockecho::cli::print(STDOUT_FILENO, sockecho::cli::server_usage());
    return 0;
  }
  if (settings.version) {
    sockecho::cli::print(STDOUT_FILENO,
                         std::string("sockecho-server ") + sockecho::kVersion + "\n");
    return 0;
  }
  try {
    return serve(settings);
  } catch (const std::exception& e) {
    sockecho::cli::print(STDERR_FILENO, std::string("sockecho-server: ") + e.what() + "\n");
    return kExitFailure;
  }
}
