#include "loom/common/index_list.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(IndexList, ParsesRangesAndSingles) {
  auto list = parse_index_list("0-3,8,10-11");
  ASSERT_TRUE(list.has_value()) << list.error().to_string();
  EXPECT_EQ(*list, (std::vector<unsigned>{0, 1, 2, 3, 8, 10, 11}));
}

TEST(IndexList, SortsAndDropsDuplicates) {
  auto list = parse_index_list("5,1-2,2");
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(*list, (std::vector<unsigned>{1, 2, 5}));
}

TEST(IndexList, RefusesMalformedElementsByName) {
  for (std::string_view bad :
       {"", "a", "1,", ",1", "1-", "-1", "3-1", "1-2-3", "1 ,2", "9999999"}) {
    auto list = parse_index_list(bad);
    EXPECT_FALSE(list.has_value()) << bad;
    if (!list) {
      const std::string quoted = fmt::format("\"{}\"", bad);
      EXPECT_NE(list.error().message().find(quoted), std::string::npos) << list.error().message();
    }
  }
  EXPECT_EQ(parse_index_list("0,3-1").error().message(),
            "invalid index list \"0,3-1\": \"3-1\" is a range that ends before it starts");
}

TEST(IndexList, FormatsAsTheKernelDoes) {
  std::vector<unsigned> indexes{11, 0, 1, 2, 3, 8, 10};
  EXPECT_EQ(format_index_list(indexes), "0-3,8,10-11");
  EXPECT_EQ(format_index_list(std::vector<unsigned>{}), "");
  EXPECT_EQ(format_index_list(std::vector<unsigned>{4}), "4");
}

TEST(IndexList, RoundTrips) {
  for (std::string_view text : {"0-3,8,10-11", "7", "0,2,4-9"}) {
    auto list = parse_index_list(text);
    ASSERT_TRUE(list.has_value());
    EXPECT_EQ(format_index_list(*list), text);
  }
}

}  // namespace
}  // namespace loom
