# Install rules: the library with its headers, CMake package and pkg-config file; the programs with
# their man pages, bash completions and systemd units; and the .deb (debian-package.cmake).
# Included from the top-level CMakeLists.txt when SOCKECHO_INSTALL is on.

include(CMakePackageConfigHelpers)

set(SOCKECHO_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/sockecho" CACHE STRING
    "Where sockecho-config.cmake is installed, relative to the prefix")
set(SOCKECHO_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where the systemd units are installed, relative to the prefix (/usr/lib/systemd/system for a package)")
set(SOCKECHO_BASH_COMPLETION_DIR "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" CACHE STRING
    "Where the bash completions are installed, relative to the prefix")
set(_generated "${PROJECT_BINARY_DIR}/install")

# --- The library ---
install(TARGETS sockecho EXPORT sockecho-targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT lib
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/sockecho DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
        FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/include/sockecho/version.hpp
              ${PROJECT_BINARY_DIR}/include/sockecho/export.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sockecho COMPONENT dev)

install(EXPORT sockecho-targets NAMESPACE sockecho:: DESTINATION ${SOCKECHO_CMAKE_DIR}
        COMPONENT dev)
configure_package_config_file(cmake/sockecho-config.cmake.in ${_generated}/sockecho-config.cmake
                              INSTALL_DESTINATION ${SOCKECHO_CMAKE_DIR})
# While the major version is 0 a minor version may break the API, so find_package(sockecho 0.1)
# accepts 0.1.x alone, as the soname does (libsockecho.so.0.1); from 1.0 on, any later 1.x.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_compatibility SameMinorVersion)
else()
  set(_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${_generated}/sockecho-config-version.cmake
                                 COMPATIBILITY ${_compatibility})
install(FILES ${_generated}/sockecho-config.cmake ${_generated}/sockecho-config-version.cmake
        DESTINATION ${SOCKECHO_CMAKE_DIR} COMPONENT dev)

# sockecho.pc and sockecho.service name installed paths, so they are written at install time, for
# the prefix really installed to (see install-generated.cmake).
install(CODE "
  set(SOCKECHO_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(SOCKECHO_GENERATED_DIR \"${_generated}\")
  set(SOCKECHO_INSTALL_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(SOCKECHO_INSTALL_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(SOCKECHO_INSTALL_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(SOCKECHO_LIBRARY_TYPE \"$<TARGET_PROPERTY:sockecho,TYPE>\")
  set(SOCKECHO_DESCRIPTION \"${PROJECT_DESCRIPTION}\")
  set(SOCKECHO_VERSION \"${PROJECT_VERSION}\")
  set(SOCKECHO_WITH_TOOLS \"${SOCKECHO_BUILD_TOOLS}\")
" ALL_COMPONENTS)
install(SCRIPT cmake/install-generated.cmake ALL_COMPONENTS)
install(FILES ${_generated}/sockecho.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# LICENSE goes in as copyright, in the form Debian reads (debian-package.cmake).
# The documents, laid out as in the source tree so that every link between them still works.
install(FILES README.md CONTRIBUTING.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT dev)
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs COMPONENT dev
        FILES_MATCHING PATTERN "*.md" PATTERN "*.png" PATTERN "*.json")
install(FILES bench/RESULTS.md bench/CURVES.md bench/results.svg bench/curves-size.svg
              bench/curves-held.svg bench/curves-concurrency.svg
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/bench COMPONENT dev)
install(FILES packaging/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}/packaging COMPONENT dev)
install(FILES clients/php/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}/clients/php COMPONENT dev)

# --- The programs and what comes with them ---
if(SOCKECHO_BUILD_TOOLS)
  # sockecho_cli, the programs' internal parser library, is linked into them and not installed.
  install(TARGETS sockecho-server sockecho-client RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
          COMPONENT tools)
  # Linked to a shared libsockecho, the installed programs find it relative to themselves, wherever
  # the prefix is; in /usr the system's search path already does.
  if(BUILD_SHARED_LIBS AND NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    file(RELATIVE_PATH _libdir_from_bindir "/${CMAKE_INSTALL_BINDIR}" "/${CMAKE_INSTALL_LIBDIR}")
    set_target_properties(sockecho-server sockecho-client PROPERTIES
                          INSTALL_RPATH "$ORIGIN/${_libdir_from_bindir}")
  endif()

  # Man pages, compressed as distributions ship them when gzip is there (man reads both).
  find_program(SOCKECHO_GZIP gzip)
  foreach(page sockecho-server.1 sockecho-client.1)
    if(SOCKECHO_GZIP)
      add_custom_command(OUTPUT ${_generated}/${page}.gz
        COMMAND ${SOCKECHO_GZIP} -9 -n -c ${PROJECT_SOURCE_DIR}/man/${page} > ${_generated}/${page}.gz
        DEPENDS ${PROJECT_SOURCE_DIR}/man/${page} VERBATIM)
      list(APPEND _man_pages ${_generated}/${page}.gz)
    else()
      list(APPEND _man_pages ${PROJECT_SOURCE_DIR}/man/${page})
    endif()
  endforeach()
  add_custom_target(sockecho_man_pages ALL DEPENDS ${_man_pages})
  install(FILES ${_man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT tools)

  install(FILES completions/sockecho-server completions/sockecho-client
          DESTINATION ${SOCKECHO_BASH_COMPLETION_DIR} COMPONENT tools)

  install(FILES ${_generated}/sockecho.service packaging/systemd/sockecho.socket
          DESTINATION ${SOCKECHO_SYSTEMD_UNIT_DIR} COMPONENT tools)
  # A drop-in for background jobs, to copy into /etc/systemd/system/sockecho.service.d/, and
  # socket units for a Unix socket and for the status listener, to copy into /etc/systemd/system/.
  install(FILES packaging/systemd/background.conf packaging/systemd/sockecho-unix.socket
                packaging/systemd/sockecho-status.socket
          DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT tools)
endif()

# --- A Debian package of all of it: cpack -G DEB ---
include(cmake/debian-package.cmake)
