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

const std::string kTrace = LOOM_SHARED_DIR "/traces/lublin-aaroh.swf";

TEST(LoomSim, ReplaysTheSharedTraceInWindows) {
  auto done = run({built("cli/loom"), "sim", "--swf", kTrace, "--backfill", "easy", "--window",
                   "1024", "--stride", "1024", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  for (const char* key : {"jobs", "utilization", "avg_wait_s", "avg_bsld", "max_wait_s",
                          "makespan_s", "sim_seconds", "windows"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["windows"], 9);  // 10,000 jobs hold nine whole windows of 1,024
  EXPECT_EQ(j["jobs"], 9 * 1024);
  EXPECT_EQ(j["nodes"], 256);  // MaxNodes 256 x 1 core per node
  EXPECT_GE(j["avg_bsld"].get<double>(), 1.0);
  EXPECT_GT(j["utilization"].get<double>(), 0.0);
  EXPECT_LE(j["utilization"].get<double>(), 1.0);
}

TEST(LoomSim, BackfillNeverWaitsLongerThanStrictOrderOnAverage) {
  auto easy = run({built("cli/loom"), "sim", "--swf", kTrace, "--backfill", "easy", "--json"});
  auto strict = run({built("cli/loom"), "sim", "--swf", kTrace, "--backfill", "none", "--json"});
  ASSERT_EQ(easy.exit_code, 0) << easy.err;
  ASSERT_EQ(strict.exit_code, 0) << strict.err;
  EXPECT_LT(json::parse(easy.out)["avg_wait_s"].get<double>(),
            json::parse(strict.out)["avg_wait_s"].get<double>());
}

// A site tries the policy loomctld will run: the configuration's [scheduler] section, which
// the options override.
TEST(LoomSim, ReplaysUnderTheConfiguredPolicy) {
  const auto file = loom::testing::temp_path("sim.toml");
  std::ofstream(file) << "[scheduler]\norder = \"sjf\"\nbackfill = \"none\"\n";
  auto configured =
      run({built("cli/loom"), "--config", file.string(), "sim", "--swf", kTrace, "--json"});
  auto flags = run({built("cli/loom"), "sim", "--swf", kTrace, "--order", "sjf", "--backfill",
                    "none", "--json"});
  auto overridden = run({built("cli/loom"), "--config", file.string(), "sim", "--swf", kTrace,
                         "--backfill", "easy", "--json"});
  ASSERT_EQ(configured.exit_code, 0) << configured.err;
  ASSERT_EQ(flags.exit_code, 0) << flags.err;
  ASSERT_EQ(overridden.exit_code, 0) << overridden.err;
  const json by_file = json::parse(configured.out), by_flags = json::parse(flags.out);
  EXPECT_EQ(by_file["order"], "sjf");
  EXPECT_EQ(by_file["backfill"], "none");
  EXPECT_EQ(by_file["avg_wait_s"], by_flags["avg_wait_s"]);
  EXPECT_EQ(json::parse(overridden.out)["backfill"], "easy");
  EXPECT_NE(json::parse(overridden.out)["avg_wait_s"], by_file["avg_wait_s"]);
}

// The shared trace was recorded on a quiet machine (load 0.04); --load replays it as a busy
// one, where the queue builds up. Its first 2,000 jobs are enough to see it, and keep the
// test short under the sanitizers.
TEST(LoomSim, ReplaysATraceAtTheLoadAsked) {
  const std::vector<std::string> first = {
      built("cli/loom"), "sim", "--swf", kTrace, "--window", "2000", "--stride", "10000", "--json"};
  auto recorded = run(first);
  auto with_load = first;
  with_load.insert(with_load.end(), {"--load", "0.9"});
  auto busy = run(with_load);
  ASSERT_EQ(recorded.exit_code, 0) << recorded.err;
  ASSERT_EQ(busy.exit_code, 0) << busy.err;
  const json quiet = json::parse(recorded.out), loaded = json::parse(busy.out);
  EXPECT_LT(quiet["offered_load"].get<double>(), 0.1);
  EXPECT_NEAR(loaded["offered_load"].get<double>(), 0.9, 0.01);
  EXPECT_GT(loaded["utilization"].get<double>(), 0.8);
  EXPECT_GT(loaded["avg_wait_s"].get<double>(), 10 * quiet["avg_wait_s"].get<double>());
  EXPECT_EQ(loaded["jobs"], quiet["jobs"]);
}

// SRTF replays the trace with short jobs preempting long ones, each preempted job running
// again from its start until every job has completed; SJF, its order without preemption,
// preempts nothing. 500 jobs at load 0.9 preempt tens of times.
TEST(LoomSim, SrtfPreemptsLongerJobsAndEveryJobStillCompletes) {
  auto replay = [](const char* order) {
    auto done = run({built("cli/loom"), "sim", "--swf", kTrace, "--order", order, "--load", "0.9",
                     "--window", "500", "--stride", "10000", "--json"});
    EXPECT_EQ(done.exit_code, 0) << done.err;
    return json::parse(done.out);
  };
  const json srtf = replay("srtf"), sjf = replay("sjf");
  EXPECT_EQ(srtf["order"], "srtf");
  EXPECT_EQ(srtf["jobs"], 500);
  EXPECT_GT(srtf["preempted"].get<int>(), 0);
  EXPECT_EQ(sjf["preempted"], 0);
  EXPECT_LT(srtf["utilization"].get<double>(), sjf["utilization"].get<double>())
      << "a preempted run's work is lost";
}

TEST(LoomSim, BadInputGetsOneLine) {
  auto policy = run({built("cli/loom"), "sim", "--swf", kTrace, "--backfill", "lottery"});
  EXPECT_EQ(policy.exit_code, 1);
  EXPECT_EQ(policy.err,
            "loom: unknown backfill policy \"lottery\": expected none, easy or conservative\n");
  const auto bad = loom::testing::temp_path("bad.swf");
  std::ofstream(bad)
      << "; MaxNodes: 4\n1 0 -1 10 1 -1 -1 -1 -1 -1 1 -1 -1 -1 0 -1 -1 -1\n2 1 -1 10\n";
  auto malformed = run({built("cli/loom"), "sim", "--swf", bad.string()});
  EXPECT_EQ(malformed.exit_code, 1);
  EXPECT_EQ(malformed.err, "loom: " + bad.string() + ":3: 4 fields, expected 18\n");
  auto missing = run({built("cli/loom"), "sim", "--swf", "/nonexistent.swf"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "loom: cannot read trace /nonexistent.swf\n");
}

}  // namespace
}  // namespace loom
