// The state's schema, as migrations in order (private to the SQLite store).
#pragma once

#include <array>
#include <string_view>

#include "loom/common/error.hpp"
#include "loom/proto/types.pb.h"
#include "sqlite.hpp"

namespace loom::controller::detail {

// The SQL here and in sqlite_store.cpp names unfinished jobs as `state < 4`: every state from
// COMPLETED on is final.
static_assert(v1::COMPLETED == 4 && v1::NODE_FAIL > v1::COMPLETED &&
              v1::STAGING_OUT < v1::COMPLETED);

// Migrations, in order: migrations[i] takes the schema from version i to i + 1.
inline constexpr std::array<std::string_view, 10> kMigrations = {
    R"sql(
      CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        user        TEXT    NOT NULL,
        uid         INTEGER NOT NULL,
        state       INTEGER NOT NULL,
        reason      TEXT    NOT NULL DEFAULT '',
        exit_code   INTEGER,
        signal      INTEGER,
        submit_time INTEGER NOT NULL,
        start_time  INTEGER,
        end_time    INTEGER,
        spec        BLOB    NOT NULL,   -- loom.v1.JobSpec
        placement   TEXT    NOT NULL DEFAULT ''
      );
      CREATE INDEX jobs_unfinished ON jobs(state) WHERE state < 4;
    )sql",
    R"sql(
      ALTER TABLE jobs ADD COLUMN array_job INTEGER;            -- the array's id, NULL if none
      ALTER TABLE jobs ADD COLUMN array_index INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE nodes (
        name         TEXT PRIMARY KEY,
        topology     TEXT NOT NULL,     -- hwtopo's JSON, as the agent registered it
        drain_reason TEXT               -- NULL unless drained
      );
    )sql",
    R"sql(
      ALTER TABLE nodes ADD COLUMN nvme TEXT NOT NULL DEFAULT '[]';  -- its NVMe devices, JSON
      ALTER TABLE jobs ADD COLUMN staging BLOB;                       -- loom.v1.StagingReport, kept with the end
      CREATE TABLE buffers (
        name    TEXT PRIMARY KEY,
        user    TEXT    NOT NULL,
        uid     INTEGER NOT NULL,
        gid     INTEGER NOT NULL,
        node    TEXT    NOT NULL,
        nvme    TEXT    NOT NULL,     -- the device's path on the node
        bytes   INTEGER NOT NULL,
        created INTEGER NOT NULL
      );
    )sql",
    R"sql(
      ALTER TABLE jobs ADD COLUMN usage BLOB;  -- loom.v1.Usage, kept with the end
    )sql",
    R"sql(
      -- loom.v1.Reason; reason is its detail. 0 on rows stored before: their reason is whole.
      ALTER TABLE jobs ADD COLUMN reason_code INTEGER NOT NULL DEFAULT 0;
    )sql",
    R"sql(
      -- A restart loads the jobs ended since controller.min_job_age, not the whole history.
      CREATE INDEX jobs_end_time ON jobs(end_time);
    )sql",
    R"sql(
      -- Each user names their own buffers. A buffer made before keeps its name on its node
      -- (slice): its files are where its jobs saw them.
      CREATE TABLE buffers_by_owner (
        name    TEXT    NOT NULL,
        slice   TEXT    NOT NULL UNIQUE,  -- its name on the node's device
        user    TEXT    NOT NULL,
        uid     INTEGER NOT NULL,
        gid     INTEGER NOT NULL,
        node    TEXT    NOT NULL,
        nvme    TEXT    NOT NULL,
        bytes   INTEGER NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (uid, name)
      );
      INSERT INTO buffers_by_owner SELECT name, name, user, uid, gid, node, nvme, bytes, created
        FROM buffers;
      DROP TABLE buffers;
      ALTER TABLE buffers_by_owner RENAME TO buffers;
    )sql",
    R"sql(
      -- Each account's decayed fair-share average (sched::FairShare), as of `at`: usage
      -- outlives a restart, as Slurm's does.
      CREATE TABLE fair_share (
        account TEXT PRIMARY KEY,
        average REAL NOT NULL,
        at      INTEGER NOT NULL
      );
    )sql",
    R"sql(
      -- The account a persistent buffer is charged to: its bytes count toward the
      -- account's max_nvme and fair share while it exists. '': none (made before, or no
      -- accounts configured).
      ALTER TABLE buffers ADD COLUMN account TEXT NOT NULL DEFAULT '';
    )sql",
    R"sql(
      -- A running job being killed (cancelled, preempted): the state and reason it ends
      -- with once its processes are gone, so that a restarted controller ends it so too.
      -- NULL: none; cleared when the job is PENDING again.
      ALTER TABLE jobs ADD COLUMN killing_state INTEGER;
      ALTER TABLE jobs ADD COLUMN killing_reason_code INTEGER;
      ALTER TABLE jobs ADD COLUMN killing_reason TEXT;
    )sql",
};

// Brings a state's schema to this build's (WAL, full fsync), one migration per transaction;
// refuses a newer one.
Status migrate(Database& db);

}  // namespace loom::controller::detail
