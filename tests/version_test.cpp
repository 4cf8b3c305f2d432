// The version header: the macros and the constants say the same, and the macros work where only
// the preprocessor can look.
#include "sockecho/version.hpp"

#include <gtest/gtest.h>

#include <string>

namespace sockecho {
namespace {

#if !defined(SOCKECHO_VERSION_MAJOR) || !defined(SOCKECHO_VERSION_MINOR) || \
    !defined(SOCKECHO_VERSION_PATCH)
#error "version.hpp should define SOCKECHO_VERSION_MAJOR, _MINOR and _PATCH"
#endif
#if SOCKECHO_VERSION_MAJOR < 0 || SOCKECHO_VERSION_MINOR < 0 || SOCKECHO_VERSION_PATCH < 0
#error "a version part should be a number the preprocessor can compare"
#endif

TEST(Version, MacrosAndConstantsAgree) {
  EXPECT_EQ(std::string(SOCKECHO_VERSION), kVersion);
  EXPECT_EQ(SOCKECHO_VERSION_MAJOR, kVersionMajor);
  EXPECT_EQ(SOCKECHO_VERSION_MINOR, kVersionMinor);
  EXPECT_EQ(SOCKECHO_VERSION_PATCH, kVersionPatch);
  EXPECT_EQ(std::string(kVersion), std::to_string(kVersionMajor) + "." +
                                       std::to_string(kVersionMinor) + "." +
                                       std::to_string(kVersionPatch));
}

}  // namespace
}  // namespace sockecho
