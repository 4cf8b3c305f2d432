// sockecho-bench: load for a sockecho server, every reply checked; the numbers on stdout.
#include <unistd.h>

#include <exception>
#include <string>
#include <vector>

#include "bench.hpp"
#include "sockecho/version.hpp"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  sockecho::bench::BenchSettings settings;
  try {
    settings = sockecho::bench::parse_bench_args(args);
  } catch (const sockecho::cli::UsageError& e) {
    sockecho::cli::print(STDERR_FILENO,
                         std::string("sockecho-bench: ") + e.what() +
                             "\nTry 'sockecho-bench --help' for more information.\n");
    return kExitUsage;
  }
  if (settings.help) {
    sockecho::cli::print(STDOUT_FILENO, sockecho::bench::bench_usage());
    return 0;
  }
  if (settings.version) {
    sockecho::cli::print(STDOUT_FILENO, std::string("sockecho-bench ") + sockecho::kVersion + "\n");
    return 0;
  }
  try {
    const int progress = !settings.quiet && ::isatty(STDERR_FILENO) == 1 ? STDERR_FILENO : -1;
    const sockecho::bench::BenchResult result = sockecho::bench::run_bench(settings, progress);
    sockecho::cli::print(STDOUT_FILENO, settings.json
                                            ? sockecho::bench::format_json(settings, result)
                                            : sockecho::bench::format_report(settings, result));
    return result.error_count() == 0 ? 0 : kExitFailure;
  } catch (const std::exception& e) {
    sockecho::cli::print(STDERR_FILENO, std::string("sockecho-bench: ") + e.what() + "\n");
    return kExitFailure;
  }
}
