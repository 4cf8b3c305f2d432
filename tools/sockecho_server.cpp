// sockecho-server: the daemon. Flags in, a Daemon runs, one-line errors and exit codes out.
#include <unistd.h>

#include <exception>
#include <string>

#include "options.hpp"
#include "sockecho/daemon.hpp"

namespace {

int serve(const sockecho::cli::ServerSettings& settings) {
  try {
    sockecho::Daemon daemon(settings);
    // The lines a supervisor or a test waits for, each on stdout as soon as it is true.
    daemon.run([](const std::string& line) { sockecho::cli::print(STDOUT_FILENO, line + "\n"); });
  } catch (const sockecho::OptionError& e) {  // an --exec program or a group not found
    throw sockecho::cli::UsageError(e.what());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything opens a descriptor: started with 0, 1 or 2 closed (as some supervisors do),
  // the listener or a connection would take that number, and log lines would go into it. A
  // closed stdout or stderr must cost a lost line, never the daemon.
  if (!sockecho::cli::prepare_standard_streams("sockecho-server")) return 1;
  return sockecho::cli::run_program("sockecho-server", argc, argv, sockecho::cli::parse_server_args,
                                    sockecho::cli::server_usage, serve);
}
