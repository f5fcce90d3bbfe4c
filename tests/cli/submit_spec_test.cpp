#include "submit_spec.hpp"

#include <gtest/gtest.h>

namespace loom::cli {
namespace {

const std::map<std::string, std::string> kEnv = {
    {"HOME", "/home/loom-alice"}, {"PATH", "/usr/bin:/bin"}, {"OMP_NUM_THREADS", "4"}};

Result<std::string> no_script(const std::string& path) {
  return make_error(ErrorCode::kNotFound, "cannot read " + path);
}

Result<SubmitRequest> submit(const std::vector<std::string>& args) {
  return parse_submit(args, "/home/loom-alice/run", kEnv, no_script);
}

std::string error_of(const std::vector<std::string>& args) {
  auto r = submit(args);
  EXPECT_FALSE(r.has_value());
  return r ? "" : r.error().to_string();
}

TEST(Submit, OptionsBecomeASpecWithSlurmsDefaults) {
  auto r = submit({"-J",
                   "sim",
                   "-N",
                   "2",
                   "--tasks-per-node",
                   "4",
                   "-c",
                   "2",
                   "--mem-per-task",
                   "4G",
                   "-t",
                   "1:30:00",
                   "--bb",
                   "100G",
                   "-A",
                   "physics",
                   "--exclusive",
                   "--",
                   "./app",
                   "--steps",
                   "10"});
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const v1::JobSpec& s = r->spec;
  EXPECT_EQ(s.name(), "sim");
  EXPECT_EQ(s.nodes_min(), 2u);
  EXPECT_EQ(s.nodes_max(), 2u);
  EXPECT_EQ(s.tasks(), 8u);  // -N 2 x --tasks-per-node 4
  EXPECT_EQ(s.cpus_per_task(), 2u);
  EXPECT_EQ(s.mem_per_task(), 4ull << 30);
  EXPECT_EQ(s.walltime_s(), 5400);
  EXPECT_EQ(s.bb_per_node(), 100ull << 30);
  EXPECT_EQ(s.account(), "physics");
  EXPECT_TRUE(s.exclusive());
  EXPECT_EQ(std::vector<std::string>(s.argv().begin(), s.argv().end()),
            (std::vector<std::string>{"./app", "--steps", "10"}));
  EXPECT_EQ(s.chdir(), "/home/loom-alice/run");
  EXPECT_EQ(s.stdout_path(), "/home/loom-alice/run/loom-%j.out");
  EXPECT_EQ(s.stderr_path(), s.stdout_path());
  EXPECT_EQ(s.environment().at("OMP_NUM_THREADS"), "4");  // --export ALL by default
  EXPECT_EQ(r->array_size, 0u);
}

TEST(Submit, DefaultsForABareCommand) {
  auto r = submit({"--", "/bin/true"});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->spec.tasks(), 1u);
  EXPECT_EQ(r->spec.cpus_per_task(), 1u);
  EXPECT_EQ(r->spec.walltime_s(), 3600);
  EXPECT_EQ(r->spec.name(), "true");
}

TEST(Submit, DependenciesArraysAndExports) {
  auto r =
      submit({"-d", "afterok:12:13,afterany:14", "--array", "1-50", "--export", "NONE", "--", "x"});
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  ASSERT_EQ(r->spec.dependencies_size(), 3);
  EXPECT_EQ(r->spec.dependencies(1).job(), 13u);
  EXPECT_EQ(r->spec.dependencies(2).kind(), v1::Dependency::AFTER_ANY);
  EXPECT_EQ(r->array_size, 50u);
  EXPECT_TRUE(r->spec.environment().empty());
  auto some = submit({"--export", "PATH,FOO=bar", "--", "x"});
  ASSERT_TRUE(some.has_value());
  EXPECT_EQ(some->spec.environment().size(), 2u);
  EXPECT_EQ(some->spec.environment().at("FOO"), "bar");
}

TEST(Submit, BadInputNamesTheOption) {
  EXPECT_EQ(error_of({"--mem-per-task", "4X", "--", "x"}),
            "--mem-per-task: invalid size \"4X\": unknown unit \"X\" (K, M, G, T, P or KiB, MiB, "
            "... are powers of "
            "1024; KB, MB, GB, TB, PB are powers of 1000)");
  EXPECT_EQ(error_of({"-t", "1:75:00", "--", "x"}),
            "--time: invalid duration \"1:75:00\": minutes must be below 60");
  EXPECT_EQ(error_of({"-N", "4-2", "--", "x"}),
            "--nodes \"4-2\": expected N or MIN-MAX with 1 <= MIN <= MAX");
  EXPECT_EQ(error_of({"-d", "after:3", "--", "x"}),
            "--dependency \"after:3\": expected afterok:ID or afterany:ID");
  EXPECT_EQ(error_of({"--array", "5", "--", "x"}), "--array \"5\": expected 1-N");
  EXPECT_EQ(error_of({"-n", "2"}), "nothing to run: give -- CMD ARGS or a batch SCRIPT");
  EXPECT_EQ(error_of({"--", ""}), "nothing to run: the command is \"\"");
  // 0 is no count: not one task on one core, as it ran before.
  for (const char* option : {"-n", "-c", "--tasks-per-node"}) {
    const std::string error = error_of({option, "0", "--", "x"});
    EXPECT_NE(error.find("not in range 1 to 1000000"), std::string::npos)
        << option << ": " << error;
  }
  EXPECT_NE(error_of({"--frobnicate", "--", "x"}).find("--frobnicate"), std::string::npos);
  EXPECT_EQ(error_of({"job.sh"}), "cannot read /home/loom-alice/run/job.sh");
}

// Every numeric, size and duration option at its limits: 0, negative, past 32 and 64 bits,
// forms CLI11 alone would take (" 2", "0x10"), and "" (which read as "not given" before).
// Each is refused with one line naming the option; what the cluster holds is the
// controller's to say (tests/controller/job_limits_test.cpp).
TEST(Submit, EveryNumericOptionAtItsLimitsIsRefusedNamingIt) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"-n", "-1"}, "--ntasks: \"-1\" is not a whole number"},
      {{"-n", "4294967296"}, "--ntasks: Value 4294967296 not in range 1 to 1000000"},
      {{"-n", "99999999999999999999999"},
       "--ntasks: Value 99999999999999999999999 not in range 1 to 1000000"},
      {{"-n", " 2"}, "--ntasks: \" 2\" is not a whole number"},
      {{"-n", "0x10"}, "--ntasks: \"0x10\" is not a whole number"},
      {{"-n", "1.5"}, "--ntasks: \"1.5\" is not a whole number"},
      {{"-n", ""}, "--ntasks: \"\" is not a whole number"},
      {{"-c", "1e3"}, "--cpus-per-task: \"1e3\" is not a whole number"},
      {{"--tasks-per-node", "1000001"},
       "--tasks-per-node: Value 1000001 not in range 1 to 1000000"},
      {{"-N", "-1"}, "--nodes \"-1\": expected N or MIN-MAX with 1 <= MIN <= MAX"},
      {{"-N", "0-0"}, "--nodes \"0-0\": expected N or MIN-MAX with 1 <= MIN <= MAX"},
      {{"-N", "1-"}, "--nodes \"1-\": expected N or MIN-MAX with 1 <= MIN <= MAX"},
      {{"-N", "4294967296"}, "--nodes \"4294967296\": expected N or MIN-MAX with 1 <= MIN <= MAX"},
      {{"-N", ""}, "--nodes: expected a value, not \"\""},
      {{"--mem-per-task", "-1"}, "--mem-per-task: invalid size \"-1\": a size cannot be negative"},
      {{"--mem-per-task", "18446744073709551616"},
       "--mem-per-task: invalid size \"18446744073709551616\": too large (a size is below "
       "16384P: 2^64 bytes)"},
      {{"--mem-per-task", "17E"},
       "--mem-per-task: invalid size \"17E\": unknown unit \"E\" (K, M, G, T, P or KiB, MiB, ... "
       "are powers of 1024; KB, MB, GB, TB, PB are powers of 1000)"},
      {{"--mem-per-task", ""}, "--mem-per-task: expected a value, not \"\""},
      {{"--bb", "99999999999999999999999"},
       "--bb: invalid size \"99999999999999999999999\": too large (a size is below 16384P: 2^64 "
       "bytes)"},
      {{"--bb", ""}, "--bb: expected a value, not \"\""},
      {{"-t", "-1"}, "--time: invalid duration \"-1\": a duration cannot be negative"},
      {{"-t", "400-00:00:00"}, "--time \"400-00:00:00\": at most 365-00:00:00"},
      {{"-t", "9999999999:00:00"},
       "--time: invalid duration \"9999999999:00:00\": longer than 100 years"},
      {{"-t", ""}, "--time: expected a value, not \"\""},
      {{"--array", "1-0"}, "--array \"1-0\": N must be 1 to 100000"},
      {{"--array", "1-4294967296"}, "--array \"4294967296\": expected a whole number"},
      {{"--array", ""}, "--array: expected a value, not \"\""},
      {{"-d", "afterok:0"}, "--dependency \"afterok:0\": job 0 cannot exist"},
      {{"-d", "afterok:18446744073709551616"},
       "--dependency \"18446744073709551616\": expected a whole number"},
      {{"-J", ""}, "--job-name: expected a value, not \"\""},
  };
  for (const auto& [options, expected] : cases) {
    std::vector<std::string> args = options;
    args.insert(args.end(), {"--", "x"});
    EXPECT_EQ(error_of(args), expected) << options[0] << " \"" << options[1] << "\"";
  }
  // At the limits, and still within them.
  auto largest = submit({"-n", "1000000", "-t", "365-00:00:00", "--mem-per-task",
                         "18446744073709551615", "-d", "afterok:18446744073709551615", "--", "x"});
  ASSERT_TRUE(largest.has_value()) << largest.error().to_string();
  EXPECT_EQ(largest->spec.tasks(), 1'000'000u);
  EXPECT_EQ(largest->spec.walltime_s(), 365 * 86400);
  EXPECT_EQ(largest->spec.dependencies(0).job(), 18446744073709551615u);
}

// Arguments and environments are bytes on Unix: what is not UTF-8 is carried as it is (it
// once failed every submission: with --export ALL, one such variable blocked them all).
// What names something the cluster knows travels as text and is refused naming the option.
TEST(Submit, BytesThatAreNotUtf8AreCarriedExactlyOrRefusedNamingTheOption) {
  std::map<std::string, std::string> env = kEnv;
  env["LATIN1"] = "caf\xe9";
  env["NAME\xff"] = "x";
  auto r = parse_submit({"-J", "r\xe9sum\xe9", "--", "./r\xe9sum\xe9", "\xff\xfe"}, "/home/\xe9",
                        env, no_script);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->spec.name(), "r\xe9sum\xe9");
  EXPECT_EQ(r->spec.argv(0), "./r\xe9sum\xe9");
  EXPECT_EQ(r->spec.argv(1), "\xff\xfe");
  EXPECT_EQ(r->spec.chdir(), "/home/\xe9");
  EXPECT_EQ(r->spec.environment().at("LATIN1"), "caf\xe9");
  EXPECT_FALSE(r->spec.environment().contains("NAME\xff"));
  EXPECT_EQ(r->not_exported, std::vector<std::string>{"NAME\\xff"});
  v1::JobSpec back;
  ASSERT_TRUE(back.ParseFromString(r->spec.SerializeAsString())) << "what the controller reads";
  EXPECT_EQ(back.argv(1), "\xff\xfe");

  EXPECT_EQ(error_of({"-A", "phys\xe9", "--", "x"}), "--account \"phys\\xe9\": not UTF-8");
  EXPECT_EQ(error_of({"--bb", "1G", "--stage-in", "storage:/caf\xe9.h5", "--", "x"}),
            "--stage-in \"storage:/caf\\xe9.h5\": not UTF-8");
  EXPECT_EQ(error_of({"--export", "N\xe9=1", "--", "x"}),
            "--export \"N\\xe9\": a variable's name must be UTF-8");
}

TEST(Submit, ScriptDirectivesAndTheCommandLineOverridesThem) {
  const std::string script =
      "#!/bin/bash\n"
      "#LOOM -n 16 -t 20\n"
      "# an ordinary comment\n"
      "#LOOM --job-name 'my run' --mem-per-task 2G\n"
      "\n"
      "srun ./app\n"
      "#LOOM -n 99\n";  // after the first command: not a directive
  auto read = [&](const std::string& path) -> Result<std::string> {
    EXPECT_EQ(path, "/home/loom-alice/run/job.sh");
    return script;
  };
  auto r = parse_submit({"-t", "45", "job.sh"}, "/home/loom-alice/run", kEnv, read);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->spec.tasks(), 16u);
  EXPECT_EQ(r->spec.walltime_s(), 45 * 60) << "the command line wins";
  EXPECT_EQ(r->spec.name(), "my run");
  EXPECT_EQ(r->spec.mem_per_task(), 2ull << 30);
  EXPECT_EQ(r->spec.script(), script);
  EXPECT_EQ(r->spec.argv(0), "/home/loom-alice/run/job.sh");
}

TEST(Submit, ABadDirectiveIsNamedAsOne) {
  auto read = [](const std::string&) -> Result<std::string> {
    return std::string("#LOOM --bogus\n");
  };
  auto r = parse_submit({"job.sh"}, "/tmp", kEnv, read);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message().rfind("#LOOM line: ", 0), 0u) << r.error().message();
  auto quote = script_directives("#LOOM -J 'unterminated\n");
  ASSERT_FALSE(quote.has_value());
  EXPECT_EQ(quote.error().message(), "script line 1: unterminated ' quote");
}

}  // namespace
}  // namespace loom::cli
