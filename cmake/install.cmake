# grace: what `cmake --install` (and `make install`) puts under the prefix.
#
#   include/grace/*.h                    the public headers, version.h too
#   lib/libgrace.so.X.Y.Z, .so.X, .so    the shared library (SONAME .so.X)
#   lib/libgrace.a                       the static library
#   lib/pkgconfig/grace.pc               pkg-config
#   lib/cmake/grace/                     find_package(grace): grace::grace
#                                        (shared), grace::grace_static
#
# (lib/ is CMAKE_INSTALL_LIBDIR.)  The prefix is the one given at install
# time (cmake --install build --prefix P) and DESTDIR is honoured: both the
# CMake package (relative to its own location) and grace.pc (written at
# install time, below) follow it.

include(CMakePackageConfigHelpers)

set(GRACE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/grace)

# Headers: the sources' public ones and the generated version.h.  The .in
# template stays behind.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/grace
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${CMAKE_BINARY_DIR}/include/grace/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/grace)

install(TARGETS grace_shared grace_static
        EXPORT grace-targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})

install(EXPORT grace-targets
        NAMESPACE grace::
        DESTINATION ${GRACE_CMAKE_DIR})
configure_package_config_file(
  ${CMAKE_SOURCE_DIR}/cmake/grace-config.cmake.in
  ${CMAKE_BINARY_DIR}/grace-config.cmake
  INSTALL_DESTINATION ${GRACE_CMAKE_DIR})
# One SONAME per major version, so one compatible range per major version.
write_basic_package_version_file(
  ${CMAKE_BINARY_DIR}/grace-config-version.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/grace-config.cmake
              ${CMAKE_BINARY_DIR}/grace-config-version.cmake
        DESTINATION ${GRACE_CMAKE_DIR})

# grace.pc, with the prefix given at install time: configured by the
# install script itself (CMAKE_INSTALL_PREFIX there is the --prefix one),
# into a directory of the build tree named after nothing but this file, then
# installed with file(INSTALL), which adds DESTDIR.
set(GRACE_PC_IN ${CMAKE_SOURCE_DIR}/cmake/grace.pc.in)
set(GRACE_PC_OUT ${CMAKE_BINARY_DIR}/pkgconfig/grace.pc)
install(CODE "
  set(GRACE_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(GRACE_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(GRACE_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(GRACE_PC_VERSION \"${PROJECT_VERSION}\")
  configure_file(\"${GRACE_PC_IN}\" \"${GRACE_PC_OUT}\" @ONLY)
  file(INSTALL DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig\"
       TYPE FILE FILES \"${GRACE_PC_OUT}\")
")
