#include "loom/controller/store.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <set>

#include "file_size_limit.hpp"
#include "temp.hpp"

namespace loom::controller {
namespace {

NewJob job(const std::string& name, std::int64_t submit = 1000) {
  NewJob j;
  j.user = "loom-alice";
  j.uid = 1001;
  j.submit_time = submit;
  j.spec.set_name(name);
  j.spec.set_tasks(8);
  j.spec.set_cpus_per_task(2);
  j.spec.set_walltime_s(600);
  j.spec.add_argv("/bin/true");
  auto* dep = j.spec.add_dependencies();
  dep->set_kind(v1::Dependency::AFTER_ANY);
  dep->set_job(7);
  return j;
}

JobUpdate transition(JobId id, v1::JobState state) {
  JobUpdate u;
  u.id = id;
  u.state = state;
  return u;
}

class StoreTest : public ::testing::Test {
 protected:
  std::filesystem::path dir_ = loom::testing::temp_path("state");
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Store> open() {
    auto store = open_sqlite_store(dir_);
    EXPECT_TRUE(store.has_value()) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }
};

TEST_F(StoreTest, JobsRoundTripWithTheirSpecs) {
  auto store = open();
  std::vector<NewJob> jobs = {job("a"), job("b", 1001)};
  auto ids = store->insert_jobs(jobs, false);
  ASSERT_TRUE(ids.has_value()) << ids.error().to_string();
  ASSERT_EQ(ids->size(), 2u);
  EXPECT_LT((*ids)[0], (*ids)[1]);
  auto rows = store->load_jobs(0);
  ASSERT_TRUE(rows.has_value());
  ASSERT_EQ(rows->size(), 2u);
  const JobRow& b = (*rows)[1];
  EXPECT_EQ(b.id, (*ids)[1]);
  EXPECT_EQ(b.user, "loom-alice");
  EXPECT_EQ(b.uid, 1001u);
  EXPECT_EQ(b.state, v1::PENDING);
  EXPECT_EQ(b.submit_time, 1001);
  EXPECT_FALSE(b.start_time.has_value());
  EXPECT_EQ(b.spec.SerializeAsString(), jobs[1].spec.SerializeAsString());
}

TEST_F(StoreTest, TransitionsSetOnlyWhatTheyName) {
  auto store = open();
  const JobId id = store->insert_jobs(std::vector<NewJob>{job("a")}, false).value()[0];
  JobUpdate running = transition(id, v1::RUNNING);
  running.start_time = 1010;
  running.placement.emplace().add_nodes()->set_node("n0");
  ASSERT_TRUE(store->update_jobs(std::vector<JobUpdate>{running}).has_value());
  JobUpdate failed = transition(id, v1::FAILED);
  failed.reason = Reason(v1::REASON_NON_ZERO_EXIT_CODE);
  failed.exit_code = 137;
  failed.signal = 9;
  failed.end_time = 1020;
  ASSERT_TRUE(store->update_jobs(std::vector<JobUpdate>{failed}).has_value());
  JobRow row = store->load_jobs(0).value().at(0);
  EXPECT_EQ(row.state, v1::FAILED);
  EXPECT_EQ(row.reason, failed.reason);
  EXPECT_EQ(row.reason.text(), "NonZeroExitCode");
  EXPECT_EQ(row.exit_code, 137);
  EXPECT_EQ(row.signal, 9);
  EXPECT_EQ(row.start_time, 1010);  // kept from the earlier transition
  EXPECT_EQ(row.end_time, 1020);
  ASSERT_EQ(row.placement.nodes_size(), 1);
  EXPECT_EQ(row.placement.nodes(0).node(), "n0");
  EXPECT_TRUE(store->load_jobs(Store::kUnfinished).value().empty()) << "a FAILED job is finished";
}

// A restart loads the jobs not ended and those ended since a time; any one job is found by
// its id, whenever it ended.
TEST_F(StoreTest, JobsEndedBeforeATimeAreLeftOutOfALoadAndStillFoundOneByOne) {
  auto store = open();
  const auto ids =
      store->insert_jobs(std::vector<NewJob>{job("old"), job("recent"), job("pending")}, false)
          .value();
  JobUpdate old = transition(ids[0], v1::COMPLETED);
  old.end_time = 1000;
  JobUpdate recent = transition(ids[1], v1::FAILED);
  recent.end_time = 2000;
  ASSERT_TRUE(store->update_jobs(std::vector<JobUpdate>{old, recent}));
  const std::vector<JobRow> rows = store->load_jobs(2000).value();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, ids[1]);
  EXPECT_EQ(rows[1].id, ids[2]);
  EXPECT_EQ(store->load_jobs(0).value().size(), 3u);
  const std::optional<JobRow> found = store->load_job(ids[0]).value();
  ASSERT_TRUE(found);
  EXPECT_EQ(found->state, v1::COMPLETED);
  EXPECT_EQ(found->end_time, 1000);
  EXPECT_EQ(found->spec.name(), "old");
  EXPECT_FALSE(store->load_job(JobId(ids[2].value() + 1)).value()) << "no such job";
}

TEST_F(StoreTest, ABatchWithAnUnknownJobChangesNothing) {
  auto store = open();
  const JobId id = store->insert_jobs(std::vector<NewJob>{job("a")}, false).value()[0];
  auto status = store->update_jobs(
      std::vector<JobUpdate>{transition(id, v1::RUNNING), transition(JobId(999), v1::RUNNING)});
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().message(), "job 999 does not exist");
  EXPECT_EQ(store->load_jobs(0).value().at(0).state, v1::PENDING);
}

TEST_F(StoreTest, AWriteThatFailsInsideABatchTakesOnlyItselfBack) {
  auto store = open();
  ASSERT_TRUE(store->begin_batch());
  const JobId a = store->insert_jobs(std::vector<NewJob>{job("a")}, false).value()[0];
  EXPECT_FALSE(store->update_jobs(
      std::vector<JobUpdate>{transition(a, v1::RUNNING), transition(JobId(999), v1::RUNNING)}));
  const JobId b = store->insert_jobs(std::vector<NewJob>{job("b")}, false).value()[0];
  ASSERT_TRUE(store->update_jobs(std::vector<JobUpdate>{transition(b, v1::RUNNING)}));
  EXPECT_EQ(store->load_jobs(0).value().size(), 2u) << "a batch's writes are read back in it";
  ASSERT_TRUE(store->end_batch());
  store.reset();
  const std::vector<JobRow> rows = open()->load_jobs(0).value();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].state, v1::PENDING) << "the failed update left a as it was";
  EXPECT_EQ(rows[1].state, v1::RUNNING);
}

// A write the disk fails inside a batch (here a job too large for SQLite's page cache, its
// pages spilled to a WAL that cannot grow) fails the whole batch: the writes before it, which
// its caller may have acted on, are not stored without it.
TEST_F(StoreTest, AWriteTheDiskFailsInsideABatchFailsTheBatch) {
  auto store = open();
  ASSERT_TRUE(store->begin_batch());
  ASSERT_TRUE(store->insert_jobs(std::vector<NewJob>{job("before")}, false));
  NewJob large = job("large");
  large.spec.add_argv(std::string(16 << 20, 'x'));
  {
    const loom::testing::FileSizeLimit full(std::filesystem::file_size(dir_ / "state.db-wal"));
    const auto inserted = store->insert_jobs(std::vector<NewJob>{large}, false);
    ASSERT_FALSE(inserted) << "the disk is full";
    EXPECT_NE(inserted.error().code(), ErrorCode::kAlreadyExists);
  }
  EXPECT_FALSE(store->insert_jobs(std::vector<NewJob>{job("after")}, false))
      << "nor is any write after it: SQLite may have rolled the batch back, and it would be "
         "stored on its own";
  const Status ended = store->end_batch();
  ASSERT_FALSE(ended) << "a batch missing a write is not stored";
  EXPECT_NE(ended.error().to_string().find("storing a batch"), std::string::npos)
      << ended.error().to_string();
  store.reset();
  EXPECT_TRUE(open()->load_jobs(0).value().empty());
}

// A probe says whether the store can take a write now, and why not.
TEST_F(StoreTest, AProbeFailsWhileTheDiskIsFullAndPassesOnceItIsNot) {
  auto store = open();
  ASSERT_TRUE(store->probe()) << "room to write";
  {
    const loom::testing::FileSizeLimit full(0);
    const Status probed = store->probe();
    ASSERT_FALSE(probed);
    EXPECT_NE(probed.error().to_string().find(dir_.string()), std::string::npos)
        << probed.error().to_string();
  }
  EXPECT_TRUE(store->probe());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "probe")) << "the probe leaves nothing behind";
}

TEST_F(StoreTest, ABatchNotEndedWhenTheControllerDiesIsNotStored) {
  { open(); }  // the schema, before the child
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto store = open_sqlite_store(dir_);
    if (!store || !(*store)->insert_jobs(std::vector<NewJob>{job("kept")}, false)) ::_exit(2);
    if (!(*store)->begin_batch()) ::_exit(3);
    if (!(*store)->insert_jobs(std::vector<NewJob>{job("lost")}, false)) ::_exit(4);
    ::_exit(0);  // dies with the batch open: nothing of it was answered
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::vector<JobRow> rows = open()->load_jobs(0).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].spec.name(), "kept");
}

TEST_F(StoreTest, StateSurvivesReopeningAndItsDirectoryIsPrivate) {
  {
    auto store = open();
    ASSERT_TRUE(store->insert_jobs(std::vector<NewJob>{job("a"), job("b")}, false).has_value());
  }
  auto store = open();
  EXPECT_EQ(store->load_jobs(0).value().size(), 2u);
  const JobId next = store->insert_jobs(std::vector<NewJob>{job("c")}, false).value()[0];
  EXPECT_EQ(next.value(), 3u) << "ids are never reused";
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(StoreTest, AnArraysElementsAreConsecutiveAndNameTheirArray) {
  auto store = open();
  const JobId single = store->insert_jobs(std::vector<NewJob>{job("single")}, false).value()[0];
  const std::vector<JobId> ids =
      store->insert_jobs(std::vector<NewJob>{job("e"), job("e"), job("e")}, true).value();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0].value(), single.value() + 1);
  EXPECT_EQ(ids[2].value(), ids[0].value() + 2);
  const std::vector<JobRow> rows = store->load_jobs(0).value();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_FALSE(rows[0].array_job.has_value());
  EXPECT_EQ(rows[0].array_index, 0u);
  for (std::uint32_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(rows[i].array_job, ids[0]);
    EXPECT_EQ(rows[i].array_index, i);
  }
}

TEST_F(StoreTest, NodesAndTheirDrainsOutliveTheStore) {
  {
    auto store = open();
    ASSERT_TRUE(store->save_node("n1", R"({"cores":4})", "[]").has_value());
    ASSERT_TRUE(store->save_node("n2", R"({"cores":8})", "[]").has_value());
    ASSERT_TRUE(store->set_drain("n1", "bad DIMM").has_value());
    EXPECT_EQ(store->set_drain("n9", "typo").error().message(), "there is no node n9");
    ASSERT_TRUE(store->save_node("n1", R"({"cores":6})", "[]").has_value())
        << "re-registering keeps the drain";
  }
  {
    auto store = open();
    const std::vector<NodeRow> nodes = store->load_nodes().value();
    ASSERT_EQ(nodes.size(), 2u);
    EXPECT_EQ(nodes[0].name, "n1");
    EXPECT_EQ(nodes[0].topology_json, R"({"cores":6})");
    EXPECT_EQ(nodes[0].drain_reason, "bad DIMM");
    EXPECT_FALSE(nodes[1].drain_reason.has_value());
    ASSERT_TRUE(store->set_drain("n1", std::nullopt).has_value());
  }
  EXPECT_FALSE(open()->load_nodes().value()[0].drain_reason.has_value());
}

// A state written by the first schema opens with its jobs intact, their placement as the
// Loom of then wrote it included.
TEST_F(StoreTest, AVersionOneStateIsMigrated) {
  std::filesystem::create_directories(dir_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "state.db").c_str(), &db), SQLITE_OK);
  const std::string spec = job("old").spec.SerializeAsString();
  ASSERT_EQ(
      sqlite3_exec(
          db,
          "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
          "INSERT INTO meta VALUES('schema_version', 1);"
          "CREATE TABLE jobs (id INTEGER PRIMARY KEY, user TEXT NOT NULL, uid INTEGER NOT NULL,"
          " state INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', exit_code INTEGER, signal "
          "INTEGER,"
          " submit_time INTEGER NOT NULL, start_time INTEGER, end_time INTEGER, spec BLOB NOT NULL,"
          " placement TEXT NOT NULL DEFAULT '');",
          nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_stmt* insert = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "INSERT INTO jobs(id, user, uid, state, reason, submit_time, spec, "
                               "placement) VALUES(5, 'loom-alice', 1001, 5, 'NonZeroExitCode', "
                               "1000, ?, ?)",
                               -1, &insert, nullptr),
            SQLITE_OK);
  sqlite3_bind_blob(insert, 1, spec.data(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(
      insert, 2,
      R"([{"bb_bytes":1048576,"exclusive":false,"node":"n0","nvme":"/dev/nvme0n1","ranks":[)"
      R"({"bound_cpus":[4,5],"bound_numa":[1],"cores":[2],"memory_bytes":0,"numa":1,"rank":0},)"
      R"({"cores":[3],"memory_bytes":0,"numa":1,"rank":1}]}])",
      -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(insert), SQLITE_DONE);
  sqlite3_finalize(insert);
  sqlite3_close(db);

  auto store = open();
  const std::vector<JobRow> rows = store->load_jobs(0).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id.value(), 5u);
  EXPECT_EQ(rows[0].state, v1::FAILED);
  EXPECT_EQ(rows[0].reason.text(), "NonZeroExitCode") << "a reason stored before codes is whole";
  EXPECT_EQ(rows[0].spec.name(), "old");
  ASSERT_EQ(rows[0].placement.nodes_size(), 1);
  const v1::PlacedNode& placed = rows[0].placement.nodes(0);
  EXPECT_EQ(placed.node(), "n0");
  EXPECT_EQ(placed.nvme(), "/dev/nvme0n1");
  EXPECT_EQ(placed.bb_bytes(), 1u << 20);
  ASSERT_EQ(placed.ranks_size(), 2);
  EXPECT_EQ(placed.ranks(0).numa(), 1u);
  ASSERT_TRUE(placed.ranks(0).has_bound());
  EXPECT_EQ(placed.ranks(0).bound().cpus_size(), 2);
  EXPECT_EQ(placed.ranks(0).bound().cpus(1), 5u);
  EXPECT_FALSE(placed.ranks(1).has_bound()) << "rank 1's agent had not reported";
  EXPECT_FALSE(rows[0].array_job.has_value());
  EXPECT_EQ(rows[0].staging.files_size(), 0) << "schema 3's staging column starts empty";
  EXPECT_EQ(store->insert_jobs(std::vector<NewJob>{job("new")}, false).value()[0].value(), 6u);
  EXPECT_TRUE(store->load_nodes().value().empty());
  EXPECT_TRUE(store->load_buffers().value().empty());
}

TEST_F(StoreTest, AStoredPlacementThatDoesNotParseIsAnErrorNamingTheJob) {
  auto store = open();
  const JobId id = store->insert_jobs(std::vector<NewJob>{job("a")}, false).value()[0];
  store.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "state.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, R"(UPDATE jobs SET placement = '[{"node":"n0"')", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  const auto rows = open()->load_jobs(0);
  ASSERT_FALSE(rows.has_value());
  EXPECT_EQ(rows.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(rows.error().to_string().find(fmt::format("job {}", id.value())), std::string::npos)
      << rows.error().to_string();
}

TEST_F(StoreTest, NvmeDevicesStagingAndBuffersOutliveTheStore) {
  {
    auto store = open();
    ASSERT_TRUE(store->save_node("n1", "{}", R"([{"path":"/nvme0","numa":0,"capacity":1000}])")
                    .has_value());
    const JobId id = store->insert_jobs(std::vector<NewJob>{job("staged")}, false).value()[0];
    v1::StagingReport report;
    v1::StagingFile* f = report.add_files();
    f->set_source("storage:/in.h5");
    f->set_bytes_done(42);
    JobUpdate u;
    u.id = id;
    u.state = v1::COMPLETED;
    u.staging = report.SerializeAsString();
    ASSERT_TRUE(store->update_jobs(std::span<const JobUpdate>(&u, 1)).has_value());
    const BufferRow alices{"scratch", "1001@scratch", "loom-alice", 1001, 1001,
                           "n1",      "/nvme0",       1 << 20,      77,   "physics"};
    ASSERT_TRUE(store->save_buffer(alices).has_value());
    BufferRow bobs = alices;  // each user names their own
    bobs.slice = "1002@scratch";
    bobs.user = "loom-bob";
    bobs.uid = 1002;
    bobs.account = "";
    ASSERT_TRUE(store->save_buffer(bobs).has_value());
    BufferRow again = alices;
    again.slice = "1001@scratch-2";
    EXPECT_EQ(store->save_buffer(again).error().code(), ErrorCode::kAlreadyExists);
    BufferRow same_slice = alices;
    same_slice.name = "other";
    EXPECT_EQ(store->save_buffer(same_slice).error().code(), ErrorCode::kAlreadyExists);
  }
  {
    auto store = open();
    EXPECT_EQ(store->load_nodes().value()[0].nvme_json,
              R"([{"path":"/nvme0","numa":0,"capacity":1000}])");
    const JobRow row = store->load_jobs(0).value().at(0);
    ASSERT_EQ(row.staging.files_size(), 1);
    EXPECT_EQ(row.staging.files(0).source(), "storage:/in.h5");
    EXPECT_EQ(row.staging.files(0).bytes_done(), 42u);
    const std::vector<BufferRow> buffers = store->load_buffers().value();
    ASSERT_EQ(buffers.size(), 2u);
    EXPECT_EQ(buffers[0].user, "loom-alice");
    EXPECT_EQ(buffers[0].slice, "1001@scratch");
    EXPECT_EQ(buffers[0].account, "physics");
    EXPECT_EQ(buffers[1].account, "");
    EXPECT_EQ(buffers[0].nvme, "/nvme0");
    EXPECT_EQ(buffers[0].bytes, 1u << 20);
    EXPECT_EQ(buffers[1].user, "loom-bob");
    ASSERT_TRUE(store->delete_buffer(1001, "scratch").has_value());
  }
  const std::vector<BufferRow> left = open()->load_buffers().value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].user, "loom-bob") << "loom-alice's buffer went, not the name";
}

// A buffer made before buffers were their owners' keeps its slice (its name): its files
// stay where its jobs saw them.
TEST_F(StoreTest, ABufferFromSchemaSixKeepsItsPlaceOnItsNode) {
  std::filesystem::create_directories(dir_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "state.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                         "INSERT INTO meta VALUES('schema_version', 6);"
                         "CREATE TABLE buffers (name TEXT PRIMARY KEY, user TEXT NOT NULL,"
                         " uid INTEGER NOT NULL, gid INTEGER NOT NULL, node TEXT NOT NULL,"
                         " nvme TEXT NOT NULL, bytes INTEGER NOT NULL, created INTEGER NOT NULL);"
                         "INSERT INTO buffers VALUES('scratch', 'loom-alice', 1001, 1001, 'n1',"
                         " '/nvme0', 1048576, 77);"
                         // as much of the jobs table as the migrations after 6 touch
                         "CREATE TABLE jobs (id INTEGER PRIMARY KEY);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = open();
  const std::vector<BufferRow> buffers = store->load_buffers().value();
  ASSERT_EQ(buffers.size(), 1u);
  EXPECT_EQ(buffers[0].name, "scratch");
  EXPECT_EQ(buffers[0].slice, "scratch");
  EXPECT_EQ(buffers[0].uid, 1001u);
  EXPECT_EQ(buffers[0].created, 77);
  EXPECT_TRUE(store
                  ->save_buffer({"scratch", "1002@scratch", "loom-bob", 1002, 1002, "n1", "/nvme0",
                                 1 << 20, 78, ""})
                  .has_value())
      << "loom-bob names his own scratch";
}

TEST_F(StoreTest, AStateFromANewerLoomIsRefused) {
  { open(); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "state.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 99 WHERE key = 'schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = open_sqlite_store(dir_);
  ASSERT_FALSE(store.has_value());
  EXPECT_EQ(store.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(store.error().to_string().find("newer Loom (schema 99"), std::string::npos)
      << store.error().to_string();
}

// A child commits jobs one at a time and reports each id once insert_jobs returned (what
// the controller would acknowledge); it is killed with SIGKILL mid-stream. Every reported
// id must be there after reopening.
TEST_F(StoreTest, EveryAcknowledgedJobSurvivesAKill) {
  { open(); }  // create the schema before the race
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    auto store = open_sqlite_store(dir_);
    if (!store) ::_exit(2);
    for (int i = 0; i < 100000; ++i) {
      auto ids = (*store)->insert_jobs(std::vector<NewJob>{job("j" + std::to_string(i))}, false);
      if (!ids) ::_exit(3);
      const std::uint64_t acked = (*ids)[0].value();
      if (::write(pipe_fds[1], &acked, sizeof(acked)) != sizeof(acked)) ::_exit(4);
    }
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::set<std::uint64_t> acknowledged;
  std::uint64_t id = 0;
  while (acknowledged.size() < 200 && ::read(pipe_fds[0], &id, sizeof(id)) == sizeof(id))
    acknowledged.insert(id);
  ::kill(pid, SIGKILL);
  while (::read(pipe_fds[0], &id, sizeof(id)) == sizeof(id))
    acknowledged.insert(id);  // what it sent before dying
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer finished before it was killed";
  ASSERT_GE(acknowledged.size(), 200u);
  auto store = open();
  std::set<std::uint64_t> stored;
  const std::vector<JobRow> rows = store->load_jobs(0).value();
  for (const JobRow& row : rows) stored.insert(row.id.value());
  for (std::uint64_t acked : acknowledged)
    EXPECT_TRUE(stored.contains(acked)) << "acknowledged job " << acked << " lost";
}

}  // namespace
}  // namespace loom::controller
