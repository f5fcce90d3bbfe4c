#include "loom/common/log.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace loom {
namespace {

class LogInit : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("LOOM_LOG"); }
};

TEST_F(LogInit, TakesTheConfiguredLevel) {
  unsetenv("LOOM_LOG");
  ASSERT_TRUE(log::init("test", "warn").has_value());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
}

TEST_F(LogInit, LoomLogOverridesTheConfiguration) {
  setenv("LOOM_LOG", "debug", 1);
  ASSERT_TRUE(log::init("test", "warn").has_value());
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::debug);
}

TEST_F(LogInit, ABadLoomLogIsNamed) {
  setenv("LOOM_LOG", "loud", 1);
  auto status = log::init("test", "info");
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().to_string(),
            "LOOM_LOG: invalid log level \"loud\": expected trace, debug, info, warn, error, "
            "critical or off");
}

TEST_F(LogInit, CanBeCalledAgain) {
  unsetenv("LOOM_LOG");
  ASSERT_TRUE(log::init("test", "info").has_value());
  ASSERT_TRUE(log::init("test", "error").has_value());
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::err);
}

}  // namespace
}  // namespace loom
