#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "run.hpp"
#include "temp.hpp"

namespace loom {
namespace {

using loom::testing::built;
using loom::testing::run;
using nlohmann::json;

std::string write_config(const std::string& text) {
  auto path = loom::testing::temp_path("loom.toml");
  std::ofstream(path) << text;
  return path.string();
}

TEST(LoomConfig, PrintsTheConfigurationInForce) {
  auto file = write_config("[auth]\nadmin_group = \"hpcadm\"\n");
  auto done = run({built("cli/loom"), "--config", file, "config", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  EXPECT_EQ(j["auth.admin_group"], "hpcadm");
  EXPECT_EQ(j["log.level"], "info");
}

TEST(LoomConfig, ATypoInTheFileNamesTheKeyAndLine) {
  auto file = write_config("[log]\nlevle = \"debug\"\n");
  auto done = run({built("cli/loom"), "--config", file, "topo"});
  EXPECT_EQ(done.exit_code, 1);
  EXPECT_EQ(done.err,
            "loom: " + file + ":2: unknown key 'log.levle' (`loom config --keys` lists them)\n");
}

TEST(LoomConfig, KeysAreListedWithTheirDefaults) {
  auto done = run({built("cli/loom"), "config", "--keys", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  ASSERT_FALSE(j["keys"].empty());
  bool found = false;
  for (const json& key : j["keys"]) {
    if (key["key"] == "auth.admin_group") {
      found = true;
      EXPECT_EQ(key["default"], "loomadm");
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace loom
