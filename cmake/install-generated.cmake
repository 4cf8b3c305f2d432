# Runs at install time (install(SCRIPT)), when CMAKE_INSTALL_PREFIX is the prefix really installed
# to: the configured one, the one given to `cmake --install --prefix`, or /usr inside a CPack
# package. The files written here name installed paths, so they are made now rather than at
# configure time. The install() rules that follow this script copy them into place.

# A directory below the prefix, as an absolute path (`base` = the prefix) or in pkg-config's
# terms (`base` = "${prefix}").
function(sockecho_path out dir base)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${base}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

sockecho_path(SOCKECHO_BINDIR "${SOCKECHO_INSTALL_BINDIR}" "${CMAKE_INSTALL_PREFIX}")
sockecho_path(SOCKECHO_PC_LIBDIR "${SOCKECHO_INSTALL_LIBDIR}" "\${prefix}")
sockecho_path(SOCKECHO_PC_INCLUDEDIR "${SOCKECHO_INSTALL_INCLUDEDIR}" "\${prefix}")
set(SOCKECHO_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")

# A static library needs its own dependencies named on the consumer's link line; a shared one
# carries them, so they are only for `pkg-config --static`.
if(SOCKECHO_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(SOCKECHO_PC_LIBS " -pthread")
  set(SOCKECHO_PC_LIBS_PRIVATE "")
else()
  set(SOCKECHO_PC_LIBS "")
  set(SOCKECHO_PC_LIBS_PRIVATE " -pthread")
endif()

set(PROJECT_DESCRIPTION "${SOCKECHO_DESCRIPTION}")
set(PROJECT_VERSION "${SOCKECHO_VERSION}")
configure_file("${SOCKECHO_SOURCE_DIR}/cmake/sockecho.pc.in"
               "${SOCKECHO_GENERATED_DIR}/sockecho.pc" @ONLY)
if(SOCKECHO_WITH_TOOLS)
  configure_file("${SOCKECHO_SOURCE_DIR}/packaging/systemd/sockecho.service.in"
                 "${SOCKECHO_GENERATED_DIR}/sockecho.service" @ONLY)
endif()
