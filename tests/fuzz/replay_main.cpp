// Replays inputs through a fuzz target without libFuzzer, so any compiler builds the targets and
// CTest runs the seed corpus (and the regression inputs in it) on every build. Arguments are
// files or directories of files; it fails if it finds no input at all, so an empty or misplaced
// corpus cannot pass unnoticed. A failed check aborts, exactly as it does under libFuzzer.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "fuzz.hpp"

namespace {

std::vector<std::filesystem::path> inputs_in(const std::filesystem::path& path) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    try {
      for (const auto& file : inputs_in(argv[i])) {
        std::ifstream in(file, std::ios::binary);
        if (!in) {
          (void)std::fprintf(stderr, "cannot read %s\n", file.c_str());
          return 1;
        }
        const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                      std::istreambuf_iterator<char>());
        // An empty vector's data() may be null; the targets take (nullptr, 0) like libFuzzer's
        // empty input, but give them a valid pointer anyway.
        static const std::uint8_t kNothing = 0;
        const auto* data =
            bytes.empty() ? &kNothing : reinterpret_cast<const std::uint8_t*>(bytes.data());
        (void)LLVMFuzzerTestOneInput(data, bytes.size());
        ++replayed;
      }
    } catch (const std::filesystem::filesystem_error& e) {
      (void)std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }
  (void)std::printf("replayed %zu inputs\n", replayed);
  return replayed == 0 ? 1 : 0;
}
