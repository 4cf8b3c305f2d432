// sockecho-bench: load for a sockecho server, every reply checked; the numbers on stdout.
#include <unistd.h>

#include "bench.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  return sockecho::cli::run_program(
      "sockecho-bench", argc, argv, sockecho::bench::parse_bench_args, sockecho::bench::bench_usage,
      [](const sockecho::bench::BenchSettings& settings) {
        const int progress = !settings.quiet && ::isatty(STDERR_FILENO) == 1 ? STDERR_FILENO : -1;
        const sockecho::bench::BenchResult result = sockecho::bench::run_bench(settings, progress);
        sockecho::cli::print(STDOUT_FILENO, settings.json
                                                ? sockecho::bench::format_json(settings, result)
                                                : sockecho::bench::format_report(settings, result));
        return result.error_count() == 0 ? 0 : sockecho::cli::kExitFailure;
      });
}
