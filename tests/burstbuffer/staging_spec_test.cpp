#include "loom/burstbuffer/staging_spec.hpp"

#include <gtest/gtest.h>

namespace loom::burstbuffer {
namespace {

TEST(StagingSpec, StageInNamesANodeAFileAndOptionallyDatasets) {
  auto whole = parse_stage_in("storage:/data/in.h5");
  ASSERT_TRUE(whole) << whole.error().to_string();
  EXPECT_EQ(whole->node, "storage");
  EXPECT_EQ(whole->path, "/data/in.h5");
  EXPECT_EQ(whole->name(), "in.h5");
  EXPECT_TRUE(whole->datasets.empty());
  auto some = parse_stage_in("storage:/in.h5:/fields/temperature,/fields/pressure");
  ASSERT_TRUE(some) << some.error().to_string();
  EXPECT_EQ(some->datasets, (std::vector<std::string>{"/fields/temperature", "/fields/pressure"}));
}

TEST(StagingSpec, StageOutNamesASliceFileANodeAndADirectory) {
  auto out = parse_stage_out("out.h5:storage:/results/");
  ASSERT_TRUE(out) << out.error().to_string();
  EXPECT_EQ(out->slice_path, "out.h5");
  EXPECT_EQ(out->node, "storage");
  EXPECT_EQ(out->dir, "/results");
  auto root = parse_stage_out("sub/out.h5:storage:/");
  ASSERT_TRUE(root) << root.error().to_string();
  EXPECT_EQ(root->dir, "/");
}

TEST(StagingSpec, RefusalsNameTheOptionAndWhy) {
  for (const char* bad :
       {"in.h5", ":/in.h5", "storage:in.h5", "storage:/", "storage:/a/../b", "storage:/dir/",
        "st orage:/in.h5", "storage:/in.h5:temperature", "storage:/in.h5:"}) {
    auto r = parse_stage_in(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("--stage-in"), std::string::npos) << r.error().message();
  }
  for (const char* bad : {"out.h5", "out.h5:storage", "/abs:storage:/r/", "../out:storage:/r/",
                          "out::/r/", "out:storage:results/", "out:storage:/a/../b/"}) {
    auto r = parse_stage_out(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("--stage-out"), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace loom::burstbuffer
