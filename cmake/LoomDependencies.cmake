# Finds every library Loom builds on, the standard way (find_package or pkg-config).
# A missing one stops configure with the Debian 12 package that provides it;
# scripts/install-deps.sh installs them all.

find_package(PkgConfig QUIET)
if(NOT PkgConfig_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config'")
endif()

# loom_require_pkgconfig(<target-name> <pkg-config module> <debian package>)
# Creates the imported target PkgConfig::<target-name>.
function(loom_require_pkgconfig name module debian_package)
  pkg_check_modules(${name} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR
      "${name} (pkg-config module '${module}') not found: install the Debian package '${debian_package}'")
  endif()
  message(STATUS "Found ${name} ${${name}_VERSION}")
endfunction()

# loom_require_package(<find_package name> <debian package> [find_package args...])
macro(loom_require_package name debian_package)
  find_package(${name} ${ARGN} QUIET)
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR "${name} not found: install the Debian package '${debian_package}'")
  endif()
  message(STATUS "Found ${name} ${${name}_VERSION}")
endmacro()

loom_require_pkgconfig(hwloc hwloc>=2.9 libhwloc-dev)
loom_require_pkgconfig(libfabric libfabric>=1.17 libfabric-dev)
loom_require_pkgconfig(munge munge libmunge-dev)
loom_require_pkgconfig(grpcpp grpc++ libgrpc++-dev)
loom_require_pkgconfig(tomlplusplus tomlplusplus libtomlplusplus-dev)
loom_require_pkgconfig(httplib cpp-httplib libcpp-httplib-dev)  # loomctld's /metrics

if(LOOM_WITH_MPI)
  loom_require_package(MPI libopenmpi-dev COMPONENTS C)
endif()
set(HDF5_PREFER_PARALLEL OFF)
loom_require_package(HDF5 libhdf5-dev COMPONENTS C)
loom_require_package(Protobuf libprotobuf-dev)
if(NOT Protobuf_PROTOC_EXECUTABLE)
  message(FATAL_ERROR "protoc not found: install the Debian package 'protobuf-compiler'")
endif()
find_program(LOOM_GRPC_CPP_PLUGIN grpc_cpp_plugin)
if(NOT LOOM_GRPC_CPP_PLUGIN)
  message(FATAL_ERROR "grpc_cpp_plugin not found: install the Debian package 'protobuf-compiler-grpc'")
endif()
loom_require_package(SQLite3 libsqlite3-dev)
loom_require_package(OpenSSL libssl-dev)
loom_require_package(nlohmann_json nlohmann-json3-dev CONFIG)
loom_require_package(CLI11 libcli11-dev CONFIG)
loom_require_package(spdlog libspdlog-dev CONFIG)
loom_require_package(Threads libc6-dev)
if(LOOM_BUILD_TESTS)
  loom_require_package(GTest libgtest-dev CONFIG)
  loom_require_package(Python3 python3 COMPONENTS Interpreter)
endif()
