#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "loom/common/errno_text.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/controller/store.hpp"
#include "sqlite.hpp"
#include "sqlite_rows.hpp"
#include "sqlite_schema.hpp"
#include "stored_placement.hpp"

namespace loom::controller {

namespace {

using detail::bind_optional;
using detail::Database;
using detail::job_from;
using detail::kSelectJob;
using detail::Statement;

class SqliteStore final : public Store {
 public:
  SqliteStore(std::filesystem::path dir, Database db) : dir_(std::move(dir)), db_(std::move(db)) {}
  Database& db() { return db_; }

  Result<std::vector<JobId>> insert_jobs(std::span<const NewJob> jobs, bool as_array) override {
    return transaction([&]() -> Result<std::vector<JobId>> {
      // Ids are chosen here, inside the write transaction that makes this the only writer,
      // so that an array's elements are consecutive and know their array's id up front.
      Statement& next = *LOOM_TRY(db_.cached("SELECT coalesce(max(id), 0) + 1 FROM jobs"));
      LOOM_TRY(next.step());
      const auto first = static_cast<JobId::rep>(sqlite3_column_int64(next.get(), 0));
      LOOM_TRY(next.reset());
      Statement& insert = *LOOM_TRY(db_.cached(
          "INSERT INTO jobs(id, user, uid, state, submit_time, spec, array_job, array_index) "
          "VALUES(?, ?, ?, 0, ?, ?, ?, ?)"));
      std::vector<JobId> ids;
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        const NewJob& job = jobs[i];
        const JobId id(first + i);
        const std::string spec = job.spec.SerializeAsString();
        sqlite3_stmt* s = insert.get();
        sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(id.value()));
        sqlite3_bind_text(s, 2, job.user.data(), static_cast<int>(job.user.size()),
                          SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, job.uid);
        sqlite3_bind_int64(s, 4, job.submit_time);
        sqlite3_bind_blob(s, 5, spec.data(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
        if (as_array) {
          sqlite3_bind_int64(s, 6, static_cast<sqlite3_int64>(first));
          sqlite3_bind_int64(s, 7, static_cast<sqlite3_int64>(i) + 1);
        } else {
          sqlite3_bind_null(s, 6);
          sqlite3_bind_int64(s, 7, 0);
        }
        LOOM_TRY(insert.step());
        ids.push_back(id);
        LOOM_TRY(insert.reset());
      }
      return ids;
    });
  }

  Status save_node(const std::string& name, const std::string& topology_json,
                   const std::string& nvme_json) override {
    Statement statement = LOOM_TRY(db_.prepare(
        "INSERT INTO nodes(name, topology, nvme) VALUES(?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET topology = excluded.topology, nvme = excluded.nvme"));
    sqlite3_bind_text(statement.get(), 1, name.data(), static_cast<int>(name.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(statement.get(), 2, topology_json.data(),
                      static_cast<int>(topology_json.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(statement.get(), 3, nvme_json.data(), static_cast<int>(nvme_json.size()),
                      SQLITE_TRANSIENT);
    Result<bool> done = transaction([&]() -> Result<bool> {
      LOOM_TRY(statement.step());
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Status set_drain(const std::string& node, const std::optional<std::string>& reason) override {
    Statement statement = LOOM_TRY(db_.prepare("UPDATE nodes SET drain_reason = ? WHERE name = ?"));
    if (reason)
      sqlite3_bind_text(statement.get(), 1, reason->data(), static_cast<int>(reason->size()),
                        SQLITE_TRANSIENT);
    sqlite3_bind_text(statement.get(), 2, node.data(), static_cast<int>(node.size()),
                      SQLITE_TRANSIENT);
    Result<bool> done = transaction([&]() -> Result<bool> {
      LOOM_TRY(statement.step());
      if (sqlite3_changes(db_.get()) != 1)
        return make_error(ErrorCode::kNotFound, fmt::format("there is no node {}", node));
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Result<std::vector<NodeRow>> load_nodes() const override {
    Statement select = LOOM_TRY(
        db_.prepare("SELECT name, topology, drain_reason, nvme FROM nodes ORDER BY rowid"));
    std::vector<NodeRow> out;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) {
      sqlite3_stmt* s = select.get();
      NodeRow row;
      row.name = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      row.topology_json = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
      if (sqlite3_column_type(s, 2) != SQLITE_NULL)
        row.drain_reason = reinterpret_cast<const char*>(sqlite3_column_text(s, 2));
      row.nvme_json = reinterpret_cast<const char*>(sqlite3_column_text(s, 3));
      out.push_back(std::move(row));
    }
    return out;
  }

  Status save_buffer(const BufferRow& b) override {
    Statement statement = LOOM_TRY(
        db_.prepare("INSERT INTO buffers(name, slice, user, uid, gid, node, nvme, bytes, created, "
                    "account) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    sqlite3_stmt* s = statement.get();
    sqlite3_bind_text(s, 1, b.name.data(), static_cast<int>(b.name.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, b.slice.data(), static_cast<int>(b.slice.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, b.user.data(), static_cast<int>(b.user.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, b.uid);
    sqlite3_bind_int64(s, 5, b.gid);
    sqlite3_bind_text(s, 6, b.node.data(), static_cast<int>(b.node.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 7, b.nvme.data(), static_cast<int>(b.nvme.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 8, static_cast<sqlite3_int64>(b.bytes));
    sqlite3_bind_int64(s, 9, b.created);
    sqlite3_bind_text(s, 10, b.account.data(), static_cast<int>(b.account.size()),
                      SQLITE_TRANSIENT);
    Result<bool> done = transaction([&]() -> Result<bool> {
      if (auto stepped = statement.step(); !stepped) {
        const int code = sqlite3_extended_errcode(db_.get());
        if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE) {
          return make_error(ErrorCode::kAlreadyExists,
                            fmt::format("a burst buffer {} of {} (on its node: {}) exists already",
                                        b.name, b.user, b.slice));
        }
        return std::unexpected(stepped.error());
      }
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Status delete_buffer(std::uint32_t uid, const std::string& name) override {
    Statement statement = LOOM_TRY(db_.prepare("DELETE FROM buffers WHERE uid = ? AND name = ?"));
    sqlite3_bind_int64(statement.get(), 1, uid);
    sqlite3_bind_text(statement.get(), 2, name.data(), static_cast<int>(name.size()),
                      SQLITE_TRANSIENT);
    Result<bool> done = transaction([&]() -> Result<bool> {
      LOOM_TRY(statement.step());
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Result<std::vector<BufferRow>> load_buffers() const override {
    Statement select = LOOM_TRY(
        db_.prepare("SELECT name, slice, user, uid, gid, node, nvme, bytes, created, account "
                    "FROM buffers ORDER BY uid, name"));
    std::vector<BufferRow> out;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) {
      sqlite3_stmt* s = select.get();
      auto text = [s](int column) {
        return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, column)));
      };
      BufferRow b;
      b.name = text(0);
      b.slice = text(1);
      b.user = text(2);
      b.uid = static_cast<std::uint32_t>(sqlite3_column_int64(s, 3));
      b.gid = static_cast<std::uint32_t>(sqlite3_column_int64(s, 4));
      b.node = text(5);
      b.nvme = text(6);
      b.bytes = static_cast<std::uint64_t>(sqlite3_column_int64(s, 7));
      b.created = sqlite3_column_int64(s, 8);
      b.account = text(9);
      out.push_back(std::move(b));
    }
    return out;
  }

  Status save_usage(const StoredUsage& usage) override {
    Statement* clear = LOOM_TRY(db_.cached("DELETE FROM fair_share"));
    Statement* insert =
        LOOM_TRY(db_.cached("INSERT INTO fair_share(account, average, at) VALUES(?, ?, ?)"));
    Result<bool> done = transaction([&]() -> Result<bool> {
      LOOM_TRY(clear->step());
      for (const auto& [account, average] : usage.averages) {
        LOOM_TRY(insert->reset());
        sqlite3_bind_text(insert->get(), 1, account.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(insert->get(), 2, average);
        sqlite3_bind_int64(insert->get(), 3, usage.at);
        LOOM_TRY(insert->step());
      }
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Result<StoredUsage> load_usage() const override {
    Statement select = LOOM_TRY(db_.prepare("SELECT account, average, at FROM fair_share"));
    StoredUsage usage;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) {
      usage.averages.emplace(reinterpret_cast<const char*>(sqlite3_column_text(select.get(), 0)),
                             sqlite3_column_double(select.get(), 1));
      usage.at = sqlite3_column_int64(select.get(), 2);
    }
    return usage;
  }

  Status update_jobs(std::span<const JobUpdate> updates) override {
    Result<bool> done = transaction([&]() -> Result<bool> {
      Statement& update = *LOOM_TRY(
          db_.cached("UPDATE jobs SET state = ?, reason = ?, reason_code = ?, "
                     "exit_code = coalesce(?, exit_code), "
                     "signal = coalesce(?, signal), start_time = coalesce(?, start_time), "
                     "end_time = coalesce(?, end_time), placement = coalesce(?, placement), "
                     "staging = coalesce(?, staging), usage = coalesce(?, usage), "
                     "killing_state = iif(?1 = 0, NULL, coalesce(?12, killing_state)), "
                     "killing_reason_code = iif(?1 = 0, NULL, coalesce(?13, killing_reason_code)), "
                     "killing_reason = iif(?1 = 0, NULL, coalesce(?14, killing_reason)) "
                     "WHERE id = ?11"));
      for (const JobUpdate& u : updates) {
        sqlite3_stmt* s = update.get();
        sqlite3_bind_int(s, 1, u.state);
        sqlite3_bind_text(s, 2, u.reason.detail.data(), static_cast<int>(u.reason.detail.size()),
                          SQLITE_TRANSIENT);
        sqlite3_bind_int(s, 3, u.reason.code);
        bind_optional(s, 4, u.exit_code);
        bind_optional(s, 5, u.signal);
        bind_optional(s, 6, u.start_time);
        bind_optional(s, 7, u.end_time);
        if (u.placement) {
          const std::string json = detail::placement_to_json(*u.placement);
          sqlite3_bind_text(s, 8, json.data(), static_cast<int>(json.size()), SQLITE_TRANSIENT);
        }
        if (u.staging)
          sqlite3_bind_blob(s, 9, u.staging->data(), static_cast<int>(u.staging->size()),
                            SQLITE_TRANSIENT);
        if (u.usage)
          sqlite3_bind_blob(s, 10, u.usage->data(), static_cast<int>(u.usage->size()),
                            SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 11, static_cast<sqlite3_int64>(u.id.value()));
        if (u.killing) {
          sqlite3_bind_int(s, 12, u.killing->state);
          sqlite3_bind_int(s, 13, u.killing->reason.code);
          sqlite3_bind_text(s, 14, u.killing->reason.detail.data(),
                            static_cast<int>(u.killing->reason.detail.size()), SQLITE_TRANSIENT);
        }
        LOOM_TRY(update.step());
        if (sqlite3_changes(db_.get()) != 1) {
          return make_error(ErrorCode::kNotFound,
                            fmt::format("job {} does not exist", u.id.value()));
        }
        LOOM_TRY(update.reset());
      }
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Result<std::vector<JobRow>> load_jobs(std::int64_t ended_since) const override {
    Statement select =
        LOOM_TRY(db_.prepare(std::string(kSelectJob) +
                             " WHERE state < 4 OR end_time IS NULL OR end_time >= ? ORDER BY id"));
    sqlite3_bind_int64(select.get(), 1, ended_since);
    std::vector<JobRow> rows;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) rows.push_back(LOOM_TRY(job_from(select.get())));
    return rows;
  }

  Result<std::vector<JobRow>> load_history(const HistoryQuery& query) const override {
    Statement select = LOOM_TRY(db_.prepare(
        std::string(kSelectJob) +
        " WHERE id > ? AND (end_time IS NULL OR end_time >= ?) AND submit_time <= ? AND "
        "(? = '' OR user = ?) ORDER BY id LIMIT ?"));
    sqlite3_bind_int64(select.get(), 1, static_cast<std::int64_t>(query.after.value()));
    sqlite3_bind_int64(select.get(), 2, query.since);
    sqlite3_bind_int64(select.get(), 3, query.until);
    sqlite3_bind_text(select.get(), 4, query.user.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(select.get(), 5, query.user.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(select.get(), 6, static_cast<std::int64_t>(query.limit));
    std::vector<JobRow> rows;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) rows.push_back(LOOM_TRY(job_from(select.get())));
    return rows;
  }

  Result<std::optional<JobRow>> load_job(JobId id) const override {
    Statement select = LOOM_TRY(db_.prepare(std::string(kSelectJob) + " WHERE id = ?"));
    sqlite3_bind_int64(select.get(), 1, static_cast<std::int64_t>(id.value()));
    if (LOOM_TRY(select.step()) != SQLITE_ROW) return std::nullopt;
    return LOOM_TRY(job_from(select.get()));
  }

  Status probe() override {
    // A new block in the state's directory, as a batch's commit needs (the WAL grows), and a
    // write of the database itself (read-only, corrupt, held by another process).
    LOOM_TRY(probe_directory());
    Statement* write =
        LOOM_TRY(db_.cached("INSERT INTO meta(key, value) VALUES('probed', unixepoch()) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
    Result<bool> done = transaction([&]() -> Result<bool> {
      LOOM_TRY(write->step());
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error().with_context("writing state.db"));
    return {};
  }

 private:
  // A batch's WAL frames, about: what a probe writes to the directory.
  static constexpr std::size_t kProbeBytes = std::size_t{64} << 10;

  Status probe_directory() const {
    const std::filesystem::path path = dir_ / "probe";
    const auto failed = [&path](std::string_view what, int e) {
      return Error(e == ENOSPC ? ErrorCode::kResourceExhausted : ErrorCode::kInternal,
                   fmt::format("{} {}: {}", what, path.string(), errno_text(e)));
    };
    Status wrote;
    if (UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)); !fd) {
      wrote = std::unexpected(failed("creating", errno));
    } else {
      const std::string zeros(kProbeBytes, '\0');
      std::size_t done = 0;
      while (wrote && done < zeros.size()) {
        const ssize_t n = ::write(fd.get(), zeros.data() + done, zeros.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          wrote = std::unexpected(failed("writing", errno));
        } else {
          done += static_cast<std::size_t>(n);
        }
      }
      if (wrote && ::fdatasync(fd.get()) != 0) wrote = std::unexpected(failed("fdatasync", errno));
    }
    ::unlink(path.c_str());
    return wrote;
  }

  Status begin_batch() override {
    LOOM_CHECK(!batch_, "begin_batch() inside a batch");
    LOOM_TRY(db_.run("BEGIN IMMEDIATE"));
    batch_ = true;
    return {};
  }

  Status end_batch() override {
    LOOM_CHECK(batch_, "end_batch() outside a batch");
    batch_ = false;
    if (std::optional<Error> failed = std::exchange(batch_failed_, std::nullopt)) {
      (void)db_.run("ROLLBACK");
      return std::unexpected(std::move(*failed).with_context("storing a batch"));
    }
    // A failure SQLite answers by rolling the whole transaction back (a full disk, an I/O
    // error) leaves no transaction to commit: COMMIT fails, and the batch is said lost.
    if (Status committed = db_.run("COMMIT"); !committed) {
      (void)db_.run("ROLLBACK");
      return std::unexpected(std::move(committed).error().with_context("storing a batch"));
    }
    return {};
  }

  // Runs body as one transaction, rolled back on any error: BEGIN IMMEDIATE ... COMMIT, or
  // inside a batch a savepoint of it. There, a refusal (kNotFound, kAlreadyExists) takes
  // back only its write; any other error is SQLite's (the disk, the file) and fails the
  // whole batch at end_batch(), since its caller may already have acted on what it took as
  // refused.
  template <typename Body>
  auto transaction(Body body) -> decltype(body()) {
    if (batch_) {
      // After a failure SQLite may have rolled the batch's transaction back: a write now
      // would be a transaction of its own, stored apart from the batch.
      if (batch_failed_) return std::unexpected(*batch_failed_);
      if (Status saved = db_.run("SAVEPOINT write"); !saved) {
        if (!batch_failed_) batch_failed_ = saved.error();
        return std::unexpected(std::move(saved).error());
      }
      auto result = body();
      if (!result) {
        if (!refusal(result.error()) && !batch_failed_) batch_failed_ = result.error();
        if (Status back = db_.run("ROLLBACK TO write"); !back && !batch_failed_)
          batch_failed_ = back.error();
      }
      if (Status released = db_.run("RELEASE write"); !released && !batch_failed_)
        batch_failed_ = released.error();
      return result;
    }
    LOOM_TRY(db_.run("BEGIN IMMEDIATE"));
    auto result = body();
    if (!result) {
      (void)db_.run("ROLLBACK");
      return result;
    }
    if (Status committed = db_.run("COMMIT"); !committed) {
      (void)db_.run("ROLLBACK");
      return std::unexpected(std::move(committed).error());
    }
    return result;
  }

  static bool refusal(const Error& error) {
    return error.code() == ErrorCode::kNotFound || error.code() == ErrorCode::kAlreadyExists;
  }

  std::filesystem::path dir_;
  Database db_;
  bool batch_ = false;
  std::optional<Error> batch_failed_;  // the first of SQLite's failures inside the batch
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format("cannot create the state directory {}: {}", state_dir.string(), ec.message()));
  }
  ::chmod(state_dir.c_str(), 0700);  // job specs and credentials' owners live here
  Database db = LOOM_TRY(Database::open((state_dir / "state.db").string()));
  auto store = std::make_unique<SqliteStore>(state_dir, std::move(db));
  LOOM_TRY(with_context(detail::migrate(store->db()),
                        fmt::format("state {}", (state_dir / "state.db").string())));
  return store;
}

}  // namespace loom::controller
