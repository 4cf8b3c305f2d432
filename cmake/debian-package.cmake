# The .deb (cpack -G DEB): its control fields, the Debian files of /usr/share/doc/sockecho
# (copyright from LICENSE, a changelog from the project version) and its maintainer scripts;
# debian-staging.cmake finishes the staged tree. Included from install.cmake; packaging/README.md
# says what lintian thinks of the result.

# Debian wants a person or team that answers for the package. The default is a placeholder, to be
# replaced by whoever builds packages for others: -DSOCKECHO_MAINTAINER="Jane Doe <jane@example.org>".
set(SOCKECHO_MAINTAINER "The sockecho authors <maintainers@users.noreply.r-seed-479ab467.example>"
    CACHE STRING "The package's Maintainer (and changelog signer), as Name <email>")
if(NOT SOCKECHO_MAINTAINER MATCHES "^[^<>@]*[^<>@ ] <[^<>@ ]+@[^<>@ ]+\\.[^<>@ ]+>$")
  message(FATAL_ERROR "SOCKECHO_MAINTAINER must read Name <email>, not '${SOCKECHO_MAINTAINER}'")
endif()

set(_debian "${PROJECT_BINARY_DIR}/install/debian")
set(SOCKECHO_DEBIAN_REVISION 1)

# copyright, in the machine-readable format (DEP-5), holding LICENSE word for word: the MIT
# text there is what DEP-5 calls Expat. Installed by every install, in place of LICENSE.
file(READ "${PROJECT_SOURCE_DIR}/LICENSE" _license)
if(NOT _license MATCHES "\nCopyright \\(c\\) ([^\n]+)\n" OR NOT _license MATCHES "\n(Permission is hereby granted.*)$")
  message(FATAL_ERROR "LICENSE is not the MIT text debian-package.cmake knows how to quote")
endif()
string(REGEX MATCH "\nCopyright \\(c\\) ([^\n]+)\n" _ "${_license}")
set(_holders "${CMAKE_MATCH_1}")
string(REGEX MATCH "\n(Permission is hereby granted.*)$" _ "${_license}")
string(STRIP "${CMAKE_MATCH_1}" _text)
# A license text is indented by one space and its empty lines written as " .".
string(REPLACE "\n\n" "\n.\n" _text "${_text}")
string(REPLACE "\n" "\n " _text " ${_text}")
file(WRITE "${_debian}/copyright"
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ${PROJECT_NAME}

Files: *
Copyright: ${_holders}
License: Expat
${_text}
")
install(FILES "${_debian}/copyright" DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT lib)

# changelog.Debian.gz: one entry for the version being packaged, so it cannot go stale. Its date
# is SOURCE_DATE_EPOCH if set, else the last commit's, else CMakeLists.txt's modification time:
# never the time of the build, so the same tree gives the same package.
if(DEFINED ENV{SOURCE_DATE_EPOCH})
  set(_epoch "$ENV{SOURCE_DATE_EPOCH}")
else()
  execute_process(COMMAND git log -1 --format=%ct WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
                  OUTPUT_VARIABLE _epoch OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                  RESULT_VARIABLE _git_status)
  if(NOT _git_status EQUAL 0 OR NOT _epoch MATCHES "^[0-9]+$")
    file(TIMESTAMP "${PROJECT_SOURCE_DIR}/CMakeLists.txt" _epoch "%s" UTC)
  endif()
endif()
# string(TIMESTAMP) reads the time from SOURCE_DATE_EPOCH when it is set.
set(_saved_epoch "$ENV{SOURCE_DATE_EPOCH}")
set(ENV{SOURCE_DATE_EPOCH} "${_epoch}")
string(TIMESTAMP _date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(ENV{SOURCE_DATE_EPOCH} "${_saved_epoch}")
file(WRITE "${_debian}/changelog"
"${PROJECT_NAME} (${PROJECT_VERSION}-${SOCKECHO_DEBIAN_REVISION}) unstable; urgency=medium

  * Version ${PROJECT_VERSION}, packaged by CPack from the sockecho tree (there is no
    Debian source package; the upstream history is in git).

 -- ${SOCKECHO_MAINTAINER}  ${_date}
")
# debian-staging.cmake adds the changelog and lintian's overrides to the package and strips what
# CPack does not.
find_program(SOCKECHO_GZIP gzip)
if(NOT SOCKECHO_GZIP OR NOT CMAKE_STRIP)
  message(STATUS "No gzip or strip: cpack -G DEB cannot make a complete package")
endif()
set(CPACK_PRE_BUILD_SCRIPTS "${PROJECT_SOURCE_DIR}/cmake/debian-staging.cmake")
set(CPACK_SOCKECHO_CHANGELOG "${_debian}/changelog")
set(CPACK_SOCKECHO_LINTIAN_OVERRIDES "${PROJECT_SOURCE_DIR}/packaging/debian/lintian-overrides")
set(CPACK_SOCKECHO_GZIP "${SOCKECHO_GZIP}")
set(CPACK_SOCKECHO_STRIP "${CMAKE_STRIP}")
set(CPACK_SOCKECHO_DOCDIR "${CMAKE_INSTALL_DOCDIR}")
set(CPACK_SOCKECHO_BINDIR "${CMAKE_INSTALL_BINDIR}")
set(CPACK_SOCKECHO_LIBDIR "${CMAKE_INSTALL_LIBDIR}")

set(CPACK_PACKAGE_NAME ${PROJECT_NAME})
set(CPACK_PACKAGE_VENDOR "The sockecho authors")
set(CPACK_PACKAGE_CONTACT "${SOCKECHO_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SOCKECHO_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "blocking TCP daemon library and tools for web applications")
# Debian wants the long description in lines under 80 characters; a lone "." is an empty line.
set(CPACK_PACKAGE_DESCRIPTION
    "sockecho-server is a small blocking TCP daemon that a web application (often
PHP) hands work to: the client sends a request and half-closes, the server
replies and closes. It runs under systemd as a service or socket-activated,
with a fixed number of workers, timeouts and size limits. sockecho-client
talks to it from the shell.
.
The package also holds libsockecho, a C++17 library (sockets, listener,
connection, a server with a pluggable handler, a one-call client), with its
headers, a CMake package and a pkg-config file, to build daemons of one's own.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${SOCKECHO_DEBIAN_REVISION})
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git" "/build.*/")
include(CPack)
