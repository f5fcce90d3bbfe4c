// An agent's job records: what one agent writes the next one reads back, and a record that
// is damaged is set aside rather than stopping the agent.
#include "loom/agent/job_record.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>

#include "temp.hpp"

namespace loom::agent {
namespace {

namespace fs = std::filesystem;

class JobRecordTest : public ::testing::Test {
 protected:
  void TearDown() override { fs::remove_all(dir_); }
  JobRecords records() {
    auto opened = JobRecords::open(dir_);
    EXPECT_TRUE(opened) << opened.error().to_string();
    return std::move(*opened);
  }
  void write(const std::string& file, const std::string& text) {
    std::ofstream(dir_ / file) << text;
  }
  JobRecord running(std::uint64_t id) {
    JobRecord r;
    r.id = JobId(id);
    r.launch.set_job(id);
    r.launch.mutable_spec()->add_argv("/bin/sleep");
    r.started.set_job(id);
    r.started.add_ranks()->set_rank(3);
    r.ranks.emplace_back(3, TaskRecord{"level/job_7/rank_3", 4242, 99, dir_ / "s"});
    return r;
  }
  fs::path dir_ = loom::testing::temp_path("records");
};

TEST_F(JobRecordTest, WhatOneAgentRecordsTheNextReadsBack) {
  const JobRecords rs = records();
  JobRecord r = running(7);
  r.daemon = true;
  r.pmix_server = TaskRecord{"level/job_7/pmix", 4243, 98, dir_ / "p"};
  ASSERT_TRUE(rs.save(r));
  JobRecord ended = running(8);
  v1::JobEnded e;
  e.set_job(8);
  e.set_exit_code(1);
  e.set_error("storage:/in on n0: no such file");
  e.set_reason(v1::REASON_STAGE_IN_FAILED);
  e.mutable_usage()->set_memory_peak_bytes(1 << 20);
  ended.ended = e;
  ASSERT_TRUE(rs.save(ended));

  const std::optional<JobRecord> back = rs.load(JobId(7));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->launch.spec().argv(0), "/bin/sleep");
  EXPECT_EQ(back->started.ranks(0).rank(), 3u);
  ASSERT_EQ(back->ranks.size(), 1u);
  EXPECT_EQ(back->ranks[0].first, 3u);
  EXPECT_EQ(back->ranks[0].second.cgroup_name, "level/job_7/rank_3");
  EXPECT_EQ(back->ranks[0].second.keeper, 4242);
  EXPECT_EQ(back->ranks[0].second.keeper_start, 99u);
  EXPECT_TRUE(back->daemon);
  ASSERT_TRUE(back->pmix_server);
  EXPECT_EQ(back->pmix_server->cgroup_name, "level/job_7/pmix");
  EXPECT_EQ(back->pmix_server->keeper, 4243);
  EXPECT_FALSE(back->ended);
  EXPECT_FALSE(rs.load(JobId(8))->pmix_server);
  const std::optional<JobRecord> end = rs.load(JobId(8));
  ASSERT_TRUE(end && end->ended);
  EXPECT_EQ(end->ended->error(), e.error());
  EXPECT_EQ(end->ended->reason(), v1::REASON_STAGE_IN_FAILED)
      << "a staging failure stays one across a restart";
  EXPECT_EQ(end->ended->usage().memory_peak_bytes(), 1u << 20);
  EXPECT_EQ(rs.load_all().size(), 2u);
  rs.remove(JobId(7));
  EXPECT_FALSE(rs.load(JobId(7)));
}

TEST_F(JobRecordTest, ARecordTheAgentBeforeThisOneWroteIsRead) {
  const JobRecords rs = records();
  // As the agent wrote them before JobRecord: a launch being started, and an end.
  write("job_5.json",
        R"({"job":5,"launching":[0,1],"launch":"{\"job\":\"5\"}","ranks":[],"ended":null})");
  write("job_6.json",
        R"({"job":6,"ranks":[],"ended":{"exit_code":137,"signal":9,"out_of_memory":true,)"
        R"("error":"","cpu_seconds":1.5,"memory_peak_bytes":null}})");
  const std::vector<JobRecord> all = rs.load_all();
  ASSERT_EQ(all.size(), 2u);
  const JobRecord& launching = all[0].id == JobId(5) ? all[0] : all[1];
  const JobRecord& ended = all[0].id == JobId(5) ? all[1] : all[0];
  ASSERT_TRUE(launching.launching);
  EXPECT_EQ(*launching.launching, (std::vector<std::uint32_t>{0, 1}));
  EXPECT_EQ(launching.launch.job(), 5u);
  ASSERT_TRUE(ended.ended);
  EXPECT_EQ(ended.ended->signal(), 9);
  EXPECT_TRUE(ended.ended->out_of_memory());
  EXPECT_DOUBLE_EQ(ended.ended->usage().cpu_seconds(), 1.5);
  EXPECT_EQ(ended.ended->reason(), v1::REASON_NONE);
}

// A command, a path, a name and an environment that are not UTF-8 are the user's bytes: the
// record keeps them exactly. Records written before they were bytes (their text as JSON
// strings, no "format") still read as they were written.
TEST_F(JobRecordTest, TheJobsBytesAreKeptExactlyAndTextRecordsStillRead) {
  const JobRecords rs = records();
  JobRecord r = running(7);
  v1::JobSpec& spec = *r.launch.mutable_spec();
  spec.set_name("caf\xe9");
  spec.add_argv("r\xe9sum\xe9.txt");
  spec.set_chdir("/home/loom-alice/\xff");
  (*spec.mutable_environment())["GREETING"] = "gr\xfc\xdf";
  ASSERT_TRUE(rs.save(r));
  const std::optional<JobRecord> back = rs.load(JobId(7));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->launch.spec().name(), "caf\xe9");
  EXPECT_EQ(back->launch.spec().argv(1), "r\xe9sum\xe9.txt");
  EXPECT_EQ(back->launch.spec().chdir(), "/home/loom-alice/\xff");
  EXPECT_EQ(back->launch.spec().environment().at("GREETING"), "gr\xfc\xdf");

  write("job_5.json",
        R"({"job":5,"launch":"{\"job\":\"5\",\"spec\":{\"name\":\"sim\",\"argv\":[\"/bin/sh\",)"
        R"(\"run.sh\"],\"script\":\"#!/bin/sh\",\"chdir\":\"/home/a\",\"stdoutPath\":\"o-%j\",)"
        R"(\"stderrPath\":\"e-%j\",\"environment\":{\"OMP_NUM_THREADS\":\"4\"},\"tasks\":2}}",)"
        R"("ranks":[],"ended":null})");
  const std::optional<JobRecord> old = rs.load(JobId(5));
  ASSERT_TRUE(old);
  const v1::JobSpec& s = old->launch.spec();
  EXPECT_EQ(s.name(), "sim");
  EXPECT_EQ(std::vector<std::string>(s.argv().begin(), s.argv().end()),
            (std::vector<std::string>{"/bin/sh", "run.sh"}));
  EXPECT_EQ(s.script(), "#!/bin/sh");
  EXPECT_EQ(s.chdir(), "/home/a");
  EXPECT_EQ(s.stdout_path(), "o-%j");
  EXPECT_EQ(s.stderr_path(), "e-%j");
  EXPECT_EQ(s.environment().at("OMP_NUM_THREADS"), "4");
  EXPECT_EQ(s.tasks(), 2u) << "the other fields as protobuf reads them";
}

// Loom 0.1 agents recorded a job's staging as the user wrote it; the files it stages out
// once it ends are read from that text.
TEST_F(JobRecordTest, AStagingRecordedAsTextIsReadIntoItsFiles) {
  const JobRecords rs = records();
  write("job_8.json",
        R"({"job":8,"launch":"{\"job\":\"8\",\"spec\":{\"stageIn\":[\"storage:/in.h5:/a\"],)"
        R"(\"stageOut\":[\"out.h5:storage:/results/\"]}}","ranks":[],"ended":null})");
  write("job_9.json",
        R"({"job":9,"launch":"{\"job\":\"9\",\"spec\":{\"stageIn\":[\"storage:in.h5\"]}}",)"
        R"("ranks":[],"ended":null})");
  const std::vector<JobRecord> all = rs.load_all();
  ASSERT_EQ(all.size(), 1u) << "a staging that does not parse sets its record aside";
  EXPECT_TRUE(fs::exists(dir_ / "job_9.json.bad"));
  const v1::JobSpec& spec = all[0].launch.spec();
  ASSERT_EQ(spec.stage_in_files_size(), 1);
  EXPECT_EQ(spec.stage_in_files(0).path(), "/in.h5");
  EXPECT_EQ(spec.stage_in_files(0).datasets(0), "/a");
  ASSERT_EQ(spec.stage_out_files_size(), 1);
  EXPECT_EQ(spec.stage_out_files(0).export_name(), "storage");
  EXPECT_EQ(spec.stage_out_files(0).dir(), "/results");
}

TEST_F(JobRecordTest, AnEndRecordedBeforeReasonsHadCodesGetsItsCode) {
  const JobRecords rs = records();
  const std::string end = R"({"job":JOB,"ranks":[],"ended":{"exit_code":127,"signal":null,)"
                          R"("out_of_memory":false,"error":"ERROR","staging":STAGING}})";
  auto record = [&](int job, const std::string& error, bool staging) {
    std::string text = end;
    text.replace(text.find("JOB"), 3, std::to_string(job));
    text.replace(text.find("ERROR"), 5, error);
    text.replace(text.find("STAGING"), 7, staging ? "true" : "false");
    write(fmt::format("job_{}.json", job), text);
  };
  record(1, "StageInFailed: storage:/in into n0's slice: gone", true);
  record(2, "StageOutFailed: o from n0's slice to storage:/r/: full", true);
  record(3, "on n0: cannot run nosuch", false);
  const std::vector<std::pair<v1::Reason, std::string>> expected{
      {v1::REASON_STAGE_IN_FAILED, "storage:/in into n0's slice: gone"},
      {v1::REASON_STAGE_OUT_FAILED, "o from n0's slice to storage:/r/: full"},
      {v1::REASON_LAUNCH_FAILED, "on n0: cannot run nosuch"}};
  for (int job = 1; job <= 3; ++job) {
    const std::optional<JobRecord> r = rs.load(JobId(job));
    ASSERT_TRUE(r && r->ended) << job;
    EXPECT_EQ(r->ended->reason(), expected[job - 1].first) << job;
    EXPECT_EQ(r->ended->error(), expected[job - 1].second) << job;
  }
}

TEST_F(JobRecordTest, ATruncatedOrIncompleteRecordIsSetAsideAndTheOthersStillLoad) {
  const JobRecords rs = records();
  ASSERT_TRUE(rs.save(running(1)));
  write("job_2.json", R"({"job":2,"launch":"{}","ranks":[{"cgroup":"x","kee)");  // disk full
  write("job_3.json", R"({"job":3,"ranks":[{"cgroup":"x"}],"ended":null})");     // no keeper
  write("job_4.json", R"({"ranks":[]})");                                        // no id
  const std::vector<JobRecord> all = rs.load_all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, JobId(1));
  for (const char* bad : {"job_2.json.bad", "job_3.json.bad", "job_4.json.bad"})
    EXPECT_TRUE(fs::exists(dir_ / bad)) << bad << " was not set aside";
  EXPECT_EQ(rs.load_all().size(), 1u) << "a record set aside is not read again";
}

}  // namespace
}  // namespace loom::agent
