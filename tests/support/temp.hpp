// Temporary paths that no other test can collide with: ctest runs tests in parallel.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace loom::testing {

// TempDir/<suite>.<test>.<pid>.<name>
inline std::filesystem::path temp_path(const std::string& name) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::filesystem::path(::testing::TempDir()) /
         (std::string(test->test_suite_name()) + "." + test->name() + "." +
          std::to_string(::getpid()) + "." + name);
}

}  // namespace loom::testing
