# The API reference: Doxygen over the public headers (include/sockecho/ and the generated
# version.hpp and export.hpp), into ${PROJECT_BINARY_DIR}/api/html. Warnings are errors, so a
# comment Doxygen cannot read fails the build (CI: .ci/steps/65-api-docs.sh). The headers keep
# plain // comments; cmake/doxygen-filter.awk hands them to Doxygen as documentation comments.
# Included from the top-level CMakeLists.txt when SOCKECHO_BUILD_DOCS is on:
#   cmake -B build-docs -DSOCKECHO_BUILD_DOCS=ON && cmake --build build-docs --target sockecho_docs

find_package(Doxygen REQUIRED)
find_program(SOCKECHO_AWK NAMES gawk mawk awk REQUIRED)

set(DOXYGEN_PROJECT_NAME sockecho)
set(DOXYGEN_PROJECT_NUMBER ${PROJECT_VERSION})
set(DOXYGEN_PROJECT_BRIEF "${PROJECT_DESCRIPTION}")
set(DOXYGEN_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/api)
set(DOXYGEN_GENERATE_HTML YES)
set(DOXYGEN_GENERATE_LATEX NO)
set(DOXYGEN_QUIET YES)
set(DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)
set(DOXYGEN_WARN_IF_DOC_ERROR YES)
set(DOXYGEN_WARN_NO_PARAMDOC NO)
set(DOXYGEN_FILE_PATTERNS *.hpp)
set(DOXYGEN_INPUT_FILTER "${SOCKECHO_AWK} -f ${PROJECT_SOURCE_DIR}/cmake/doxygen-filter.awk")
set(DOXYGEN_FILTER_SOURCE_FILES NO)
# Every public name, documented or not; nothing private (the detail namespace, private members).
set(DOXYGEN_EXTRACT_ALL YES)
set(DOXYGEN_EXTRACT_PRIVATE NO)
set(DOXYGEN_EXTRACT_STATIC YES)
set(DOXYGEN_EXCLUDE_SYMBOLS "sockecho::detail" "detail")
# The export marks are attributes, not part of a name.
set(DOXYGEN_ENABLE_PREPROCESSING YES)
set(DOXYGEN_MACRO_EXPANSION YES)
set(DOXYGEN_EXPAND_ONLY_PREDEF YES)
set(DOXYGEN_PREDEFINED "SOCKECHO_EXPORT=" "SOCKECHO_NO_EXPORT=")
set(DOXYGEN_SEARCH_INCLUDES NO)
set(DOXYGEN_FULL_PATH_NAMES YES)
set(DOXYGEN_STRIP_FROM_PATH ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include)
set(DOXYGEN_STRIP_FROM_INC_PATH ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include)
set(DOXYGEN_SORT_MEMBER_DOCS NO)
set(DOXYGEN_JAVADOC_AUTOBRIEF YES)
set(DOXYGEN_HTML_TIMESTAMP NO)

doxygen_add_docs(sockecho_docs
  ${PROJECT_SOURCE_DIR}/include/sockecho
  ${PROJECT_BINARY_DIR}/include/sockecho/version.hpp
  ${PROJECT_BINARY_DIR}/include/sockecho/export.hpp
  COMMENT "API reference (Doxygen) into ${PROJECT_BINARY_DIR}/api/html")
