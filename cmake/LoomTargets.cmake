# How Loom's own targets are declared: warnings as errors on Loom's code only, the
# loom::<name> alias every library exports, and what `cmake --install` puts where.
include(GNUInstallDirs)

function(loom_compile_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(LOOM_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  # GCC 12 at -O2/-O3 reports -Wrestrict on std::string concatenation inside libstdc++
  # (GCC bug 105651, fixed in 13): a false positive that no code change of ours avoids.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
endfunction()

# loom_add_library(<name> [INTERNAL] SOURCES ... PUBLIC_DEPENDS ... PRIVATE_DEPENDS ...)
# Builds loom_<name>, loom::<name> in this tree and, unless INTERNAL, installed with its
# public headers (include/loom/<name>/) and exported as loom::<name> (LoomConfig.cmake).
function(loom_add_library name)
  cmake_parse_arguments(ARG "INTERNAL" "" "SOURCES;PUBLIC_DEPENDS;PRIVATE_DEPENDS" ${ARGN})
  add_library(loom_${name} ${ARG_SOURCES})
  add_library(loom::${name} ALIAS loom_${name})
  target_include_directories(loom_${name}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(loom_${name} PUBLIC ${ARG_PUBLIC_DEPENDS} PRIVATE ${ARG_PRIVATE_DEPENDS})
  loom_compile_options(loom_${name})
  if(NOT ARG_INTERNAL)
    set_target_properties(loom_${name} PROPERTIES EXPORT_NAME ${name})
    install(TARGETS loom_${name} EXPORT LoomTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
    install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endif()
endfunction()

# loom_add_executable(<name> [INSTALL] SOURCES ... DEPENDS ...)
# INSTALL: a program of Loom's, installed in bin/ beside the others (they find each other
# there: loomd its keeper, mpirun's ranks loom-rank, loom its helper programs).
function(loom_add_executable name)
  cmake_parse_arguments(ARG "INSTALL" "" "SOURCES;DEPENDS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPENDS})
  loom_compile_options(${name})
  if(ARG_INSTALL)
    install(TARGETS ${name} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endfunction()
