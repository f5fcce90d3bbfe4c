#include "loom/common/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

#include "loom/common/errno_text.hpp"
#include "loom/common/ids.hpp"

namespace loom {
namespace {

Result<int> parse_positive(int value) {
  if (value <= 0) return make_error(ErrorCode::kInvalidArgument, "value must be positive");
  return value;
}

Result<int> doubled(int value) {
  int checked = LOOM_TRY(with_context(parse_positive(value), "doubling"));
  return checked * 2;
}

Status check_both(int a, int b) {
  LOOM_TRY(doubled(a));
  LOOM_TRY(doubled(b));
  return {};
}

TEST(LoomTry, PassesTheValueThrough) {
  auto result = doubled(21);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, 42);
  EXPECT_TRUE(check_both(1, 2).has_value());
}

TEST(LoomTry, ReturnsTheErrorWithItsContext) {
  auto status = check_both(1, -2);
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(status.error().to_string(), "doubling: value must be positive");
}

TEST(Error, OuterContextReadsFirst) {
  Error error(ErrorCode::kNotFound, "no such file");
  error.with_context("reading topology").with_context("starting agent");
  EXPECT_EQ(error.to_string(), "starting agent: reading topology: no such file");
  ASSERT_EQ(error.context().size(), 2u);
  EXPECT_EQ(error.context().front(), "reading topology");
}

TEST(Error, RetryableCodesFollowAbseil) {
  EXPECT_TRUE(is_retryable(ErrorCode::kUnavailable));
  EXPECT_FALSE(is_retryable(ErrorCode::kInvalidArgument));
  EXPECT_FALSE(is_retryable(ErrorCode::kFailedPrecondition));
  EXPECT_EQ(to_string(ErrorCode::kPermissionDenied), "permission denied");
}

TEST(LoomCheckDeathTest, ABrokenInvariantAborts) {
  EXPECT_DEATH(LOOM_CHECK(1 + 1 == 3, "arithmetic"), "check failed.*1 \\+ 1 == 3.*arithmetic");
}

TEST(StrongId, ComparesAndHashesByValue) {
  EXPECT_EQ(JobId(7), JobId(7));
  EXPECT_LT(JobId(6), JobId(7));
  EXPECT_EQ(std::hash<JobId>{}(JobId(7)), std::hash<std::uint64_t>{}(7));
  static_assert(!std::is_convertible_v<JobId, NodeId>);
  static_assert(!std::is_convertible_v<std::uint64_t, JobId>);
}

// strerror's text, for a code it knows and one it does not (which strerror_r writes into
// the caller's buffer, not a static one).
TEST(ErrnoText, IsStrerrorsText) {
  EXPECT_EQ(errno_text(ENOENT), "No such file or directory");
  EXPECT_EQ(errno_text(10007), "Unknown error 10007");
}

}  // namespace
}  // namespace loom
