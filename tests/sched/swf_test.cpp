#include "loom/sched/swf.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "loom/sched/simulator.hpp"

namespace loom::sched {
namespace {

constexpr std::string_view kHeader = "; Version: 2\n; MaxNodes: 4\n; MaxProcs: 8\n";

std::string line(int id, int submit, int run, int procs, int requested_time = -1) {
  return fmt::format("{} {} -1 {} {} -1 -1 -1 {} -1 1 -1 -1 -1 0 -1 -1 -1\n", id, submit, run,
                     procs, requested_time);
}

TEST(Swf, ReadsTheHeaderAndTheFieldsLoomUses) {
  auto trace =
      parse_swf(std::string(kHeader) + line(1, 0, 100, 4, 120) + "\n" + line(2, 5, 50, 2), "t.swf");
  ASSERT_TRUE(trace.has_value()) << trace.error().to_string();
  EXPECT_EQ(trace->max_nodes, 4);
  EXPECT_EQ(trace->max_procs, 8);
  ASSERT_EQ(trace->jobs.size(), 2u);
  EXPECT_EQ(trace->jobs[0].run, 100);
  EXPECT_EQ(trace->jobs[0].allocated, 4);
  EXPECT_EQ(trace->jobs[0].requested_time, 120);
  EXPECT_EQ(trace->jobs[1].submit, 5);
  EXPECT_EQ(trace->jobs[1].line, 6u);
}

TEST(Swf, BadLinesAreNamedByNumber) {
  auto short_line = parse_swf(std::string(kHeader) + "1 0 -1 100 4\n", "t.swf");
  ASSERT_FALSE(short_line.has_value());
  EXPECT_EQ(short_line.error().message(), "t.swf:4: 5 fields, expected 18");
  auto word = parse_swf(std::string(kHeader) + line(1, 0, 100, 4) +
                            "2 x -1 1 1 -1 -1 -1 -1 -1 1 -1 -1 -1 0 -1 -1 -1\n",
                        "t.swf");
  ASSERT_FALSE(word.has_value());
  EXPECT_EQ(word.error().message(), "t.swf:5: field 2 is \"x\", not an integer");
}

TEST(Simulate, ComputesWaitAndBoundedSlowdownByHand) {
  // 8 cores. Job 1 holds 6 for 100 s; job 2 (4 cores) waits until t=100; job 3 (2 cores,
  // 50 s) backfills at t=2 and ends before job 2 could start.
  auto trace = parse_swf(
      std::string(kHeader) + line(1, 0, 100, 6) + line(2, 1, 100, 4) + line(3, 2, 50, 2), "t.swf");
  ASSERT_TRUE(trace.has_value());
  SimOptions options;
  options.cores_per_node = 2;
  auto m = simulate(*trace, options);
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->nodes, 4u);  // MaxProcs 8 / 2 cores per node
  EXPECT_EQ(m->jobs, 3u);
  EXPECT_DOUBLE_EQ(m->avg_wait_s, (0 + 99 + 0) / 3.0);
  EXPECT_DOUBLE_EQ(m->avg_bsld, (1 + (99 + 100) / 100.0 + 1) / 3.0);
  EXPECT_DOUBLE_EQ(m->max_wait_s, 99);
  EXPECT_DOUBLE_EQ(m->makespan_s, 200);
  EXPECT_DOUBLE_EQ(m->utilization, (600 + 400 + 100) / (8.0 * 200));

  options.scheduler.backfill = "none";  // without backfill job 3 waits behind job 2
  auto strict = simulate(*trace, options);
  ASSERT_TRUE(strict.has_value());
  EXPECT_DOUBLE_EQ(strict->avg_wait_s, (0 + 99 + 98) / 3.0);
}

TEST(Simulate, WindowsReplayFromAnEmptyMachine) {
  std::string text(kHeader);
  for (int i = 0; i < 10; ++i) text += line(i + 1, i, 10, 8);
  auto trace = parse_swf(text, "t.swf");
  ASSERT_TRUE(trace.has_value());
  SimOptions options;
  options.window = 4;
  options.stride = 3;
  auto m = simulate(*trace, options);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->windows, 3u);  // jobs 0-3, 3-6, 6-9
  EXPECT_EQ(m->jobs, 12u);
  // In each window the k-th job waits 10k - k seconds: (0 + 9 + 18 + 27) / 4.
  EXPECT_DOUBLE_EQ(m->avg_wait_s, 13.5);
}

TEST(Simulate, RefusesATraceWithoutAMachineSize) {
  auto trace = parse_swf(line(1, 0, 10, 1), "t.swf");
  ASSERT_TRUE(trace.has_value());
  auto m = simulate(*trace, {});
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().message(),
            "the trace's header gives neither MaxProcs nor MaxNodes: the machine size is unknown");
}

}  // namespace
}  // namespace loom::sched
