// sockecho_test_hog: a program that uses what the per-run limits of the host bound, for the
// tests of --job-memory and --job-cpu (and ProgramLimits::memory, cpu).
//   hog memory BYTES [MS]  touches BYTES of fresh memory, then holds it MS milliseconds and
//                          exits 0, or for ever without MS
//   hog cpu [MS]           a busy loop for MS milliseconds of CPU time and exits 0, or for ever
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace {

double cpu_ms() {
  timespec used{};
  (void)::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
  return static_cast<double>(used.tv_sec) * 1e3 + static_cast<double>(used.tv_nsec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() >= 2 && args[0] == "memory") {
    // Every byte written, so every page is resident (not merely reserved).
    std::vector<char> held(std::stoull(args[1]), 'x');
    if (args.size() >= 3) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoll(args[2])));
      return held.back() == 'x' ? 0 : 1;
    }
    for (;;) ::pause();
  }
  if (!args.empty() && args[0] == "cpu") {
    const double until = args.size() > 1 ? std::stod(args[1]) : -1;
    volatile unsigned long spins = 0;
    while (until < 0 || cpu_ms() < until) {
      for (int i = 0; i < 100000; ++i) spins = spins + 1;
    }
    return 0;
  }
  return 2;
}
