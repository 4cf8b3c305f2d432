// sockecho-server with turns between sources switched off: the same flags, parsed by the same
// parser, run by the same Daemon, with DaemonOptions::job_turns false, so that queued jobs start
// strictly in the order they came. bench/jobs.py --fairness builds it (against the static
// libraries of a build directory) to measure what the turns give, in the same run.
#include <unistd.h>

#include <string>

#include "options.hpp"
#include "sockecho/daemon.hpp"

namespace {

int serve(const sockecho::cli::ServerSettings& settings) {
  sockecho::DaemonOptions options = settings;
  options.job_turns = false;
  sockecho::Daemon daemon(options);
  daemon.run([](const std::string& line) { sockecho::cli::print(STDOUT_FILENO, line + "\n"); });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return sockecho::cli::run_program("turns_daemon", argc, argv, sockecho::cli::parse_server_args,
                                    sockecho::cli::server_usage, serve);
}
