// Temporary paths that no other test can collide with: ctest runs tests in parallel. Each
// path handed out is removed (with what is under it) when the test program exits, so that a
// test that fails, or forgets, leaves nothing in TempDir.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace loom::testing {

namespace detail {
struct TempPaths {
  std::mutex mutex;
  std::vector<std::filesystem::path> paths;
  pid_t owner = ::getpid();  // a forked child that exits must not remove its parent's files
};
inline TempPaths& temp_paths() {
  static TempPaths* paths = [] {
    auto* p = new TempPaths;  // never destroyed: the exit handler below still needs it
    std::atexit([] {
      if (::getpid() != temp_paths().owner) return;
      std::error_code ignored;
      for (const auto& path : temp_paths().paths) std::filesystem::remove_all(path, ignored);
    });
    return p;
  }();
  return *paths;
}
}  // namespace detail

// TempDir/<suite>.<test>.<pid>.<name>
inline std::filesystem::path temp_path(const std::string& name) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path path = std::filesystem::path(::testing::TempDir()) /
                               (std::string(test->test_suite_name()) + "." + test->name() + "." +
                                std::to_string(::getpid()) + "." + name);
  detail::TempPaths& registry = detail::temp_paths();
  std::lock_guard lock(registry.mutex);
  registry.paths.push_back(path);
  return path;
}

}  // namespace loom::testing
