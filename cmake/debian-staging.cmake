# Run by cpack -G DEB (CPACK_PRE_BUILD_SCRIPTS) on its staging tree, after the install and before
# the .deb is made: the part of a Debian build that CPack leaves out. The CPACK_SOCKECHO_*
# variables come from debian-package.cmake through CPackConfig.cmake.
set(root "${CPACK_TEMPORARY_INSTALL_DIRECTORY}${CPACK_PACKAGING_INSTALL_PREFIX}")

# The changelog, only in the package: a plain cmake --install is no Debian package.
set(doc "${root}/${CPACK_SOCKECHO_DOCDIR}")
file(MAKE_DIRECTORY "${doc}")
execute_process(COMMAND "${CPACK_SOCKECHO_GZIP}" -9 -n -c "${CPACK_SOCKECHO_CHANGELOG}"
                OUTPUT_FILE "${doc}/changelog.Debian.gz" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "gzip of the Debian changelog failed: ${status}")
endif()

# lintian's overrides, also only in the package.
set(overrides "${root}/share/lintian/overrides")
file(MAKE_DIRECTORY "${overrides}")
file(COPY_FILE "${CPACK_SOCKECHO_LINTIAN_OVERRIDES}" "${overrides}/${CPACK_PACKAGE_NAME}")
file(CHMOD "${doc}/changelog.Debian.gz" "${overrides}/${CPACK_PACKAGE_NAME}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# CPACK_STRIP_FILES strips the programs (and a shared library) of their symbols; Debian also drops
# the compiler's .comment notes, and strips a static library of its debugging information
# (keeping its symbols, which the linker needs) with the archive's dates zeroed.
function(debian_strip file)
  if(NOT IS_SYMLINK "${file}")
    execute_process(COMMAND "${CPACK_SOCKECHO_STRIP}" --remove-section=.comment ${ARGN} "${file}"
                    RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "strip ${ARGN} ${file} failed: ${status}")
    endif()
  endif()
endfunction()
file(GLOB programs "${root}/${CPACK_SOCKECHO_BINDIR}/*" "${root}/${CPACK_SOCKECHO_LIBDIR}/libsockecho.so.*")
foreach(file IN LISTS programs)
  debian_strip("${file}")
endforeach()
if(EXISTS "${root}/${CPACK_SOCKECHO_LIBDIR}/libsockecho.a")
  debian_strip("${root}/${CPACK_SOCKECHO_LIBDIR}/libsockecho.a" --strip-debug --enable-deterministic-archives)
endif()
