#include "loom/burstbuffer/staging_spec.hpp"

#include <gtest/gtest.h>

namespace loom::burstbuffer {
namespace {

std::vector<std::string> datasets(const v1::StageIn& in) {
  return {in.datasets().begin(), in.datasets().end()};
}

TEST(StagingSpec, StageInNamesAnExportAFileAndOptionallyDatasets) {
  auto whole = parse_stage_in("storage:/data/in.h5");
  ASSERT_TRUE(whole) << whole.error().to_string();
  EXPECT_EQ(whole->export_name(), "storage");
  EXPECT_EQ(whole->path(), "/data/in.h5");
  EXPECT_EQ(slice_name(*whole), "in.h5");
  EXPECT_TRUE(datasets(*whole).empty());
  auto some = parse_stage_in("storage:/in.h5:/fields/temperature,/fields/pressure");
  ASSERT_TRUE(some) << some.error().to_string();
  EXPECT_EQ(datasets(*some), (std::vector<std::string>{"/fields/temperature", "/fields/pressure"}));
  EXPECT_EQ(text_of(*some), "storage:/in.h5:/fields/temperature,/fields/pressure")
      << "shown as written";
}

TEST(StagingSpec, StageOutNamesASliceFileAnExportAndADirectory) {
  auto out = parse_stage_out("out.h5:storage:/results/");
  ASSERT_TRUE(out) << out.error().to_string();
  EXPECT_EQ(out->slice_path(), "out.h5");
  EXPECT_EQ(out->export_name(), "storage");
  EXPECT_EQ(out->dir(), "/results");
  auto root = parse_stage_out("sub/out.h5:storage:/");
  ASSERT_TRUE(root) << root.error().to_string();
  EXPECT_EQ(root->dir(), "/");
}

TEST(StagingSpec, RefusalsNameTheOptionAndQuoteWhatWasWritten) {
  for (const char* bad :
       {"in.h5", ":/in.h5", "storage:in.h5", "storage:/", "storage:/a/../b", "storage:/dir/",
        "st orage:/in.h5", "storage:/in.h5:temperature", "storage:/in.h5:"}) {
    auto r = parse_stage_in(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_TRUE(r.error().message().starts_with(std::string("--stage-in ") + bad + ": "))
        << r.error().message();
  }
  for (const char* bad : {"out.h5", "out.h5:storage", "/abs:storage:/r/", "../out:storage:/r/",
                          "out::/r/", "out:storage:results/", "out:storage:/a/../b/"}) {
    auto r = parse_stage_out(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_TRUE(r.error().message().starts_with(std::string("--stage-out ") + bad + ": "))
        << r.error().message();
  }
}

// The controller checks again what any client sends, field by field.
TEST(StagingSpec, ASpecFromAnotherClientIsCheckedFieldByField) {
  v1::JobSpec spec;
  *spec.add_stage_in_files() = parse_stage_in("storage:/in.h5").value();
  *spec.add_stage_out_files() = parse_stage_out("out.h5:storage:/results/").value();
  EXPECT_TRUE(check_staging(spec).has_value());
  spec.mutable_stage_in_files(0)->set_path("/etc/../shadow");
  Status s = check_staging(spec);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(),
            "--stage-in storage:/etc/../shadow: the path must be a file's absolute path in the "
            "node's export, without '.' or '..'");
  spec.mutable_stage_in_files(0)->set_path("/in.h5");
  spec.mutable_stage_out_files(0)->set_slice_path("/etc/passwd");
  EXPECT_FALSE(check_staging(spec));
  spec.mutable_stage_out_files(0)->set_slice_path("out.h5");
  spec.mutable_stage_out_files(0)->set_export_name("");
  EXPECT_FALSE(check_staging(spec));
}

// A job stored, or an agent's record written, by Loom 0.1 carries its staging as text.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST(StagingSpec, ALoom01SpecIsLiftedIntoTheTypedFields) {
  v1::JobSpec spec;
  spec.add_stage_in("storage:/in.h5:/a");
  spec.add_stage_out("out.h5:storage:/results/");
  ASSERT_TRUE(lift_legacy_staging(spec).has_value());
  EXPECT_EQ(spec.stage_in_size(), 0);
  EXPECT_EQ(spec.stage_out_size(), 0);
  ASSERT_EQ(spec.stage_in_files_size(), 1);
  EXPECT_EQ(text_of(spec.stage_in_files(0)), "storage:/in.h5:/a");
  ASSERT_EQ(spec.stage_out_files_size(), 1);
  EXPECT_EQ(spec.stage_out_files(0).dir(), "/results");
  spec.add_stage_in("storage:in.h5");
  EXPECT_FALSE(lift_legacy_staging(spec)) << "and checked as it is lifted";
}
#pragma GCC diagnostic pop

}  // namespace
}  // namespace loom::burstbuffer
