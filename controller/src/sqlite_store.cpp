#include <fmt/format.h>
#include <sys/stat.h>

#include <array>

#include "loom/controller/store.hpp"
#include "sqlite.hpp"

namespace loom::controller {

namespace {

using detail::Database;
using detail::Statement;

// The SQL below names unfinished jobs as `state < 4`: every state from COMPLETED on is final.
static_assert(v1::COMPLETED == 4 && v1::NODE_FAIL > v1::COMPLETED && v1::STAGING_OUT < v1::COMPLETED);

// Migrations, in order: migrations[i] takes the schema from version i to i + 1.
constexpr std::array<std::string_view, 1> kMigrations = {
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
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(Database db) : db_(std::move(db)) {}

  Status migrate() {
    // Durability: WAL with a full fsync at every commit, as the controller acknowledges
    // only what is on disk.
    LOOM_TRY(db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
    LOOM_TRY(db_.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"));
    Statement read = LOOM_TRY(db_.prepare("SELECT value FROM meta WHERE key = 'schema_version'"));
    int version = 0;
    if (LOOM_TRY(read.step()) == SQLITE_ROW) version = sqlite3_column_int(read.get(), 0);
    if (version > store_schema_version()) {
      return make_error(ErrorCode::kFailedPrecondition,
                        fmt::format("the state was written by a newer Loom (schema {}; this one knows up to {})",
                                    version, store_schema_version()));
    }
    for (; version < store_schema_version(); ++version) {
      LOOM_TRY(db_.exec("BEGIN IMMEDIATE"));
      Status step = db_.exec(kMigrations[static_cast<std::size_t>(version)]);
      if (step) {
        step = db_.exec(fmt::format("INSERT INTO meta(key, value) VALUES('schema_version', {}) "
                                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                    version + 1));
      }
      if (!step) {
        (void)db_.exec("ROLLBACK");
        return std::unexpected(std::move(step).error().with_context(fmt::format("migrating the state to schema {}", version + 1)));
      }
      LOOM_TRY(db_.exec("COMMIT"));
    }
    return {};
  }

  Result<std::vector<JobId>> insert_jobs(std::span<const NewJob> jobs) override {
    return transaction([&]() -> Result<std::vector<JobId>> {
      Statement insert = LOOM_TRY(db_.prepare(
          "INSERT INTO jobs(user, uid, state, submit_time, spec) VALUES(?, ?, 0, ?, ?)"));
      std::vector<JobId> ids;
      for (const NewJob& job : jobs) {
        const std::string spec = job.spec.SerializeAsString();
        sqlite3_bind_text(insert.get(), 1, job.user.data(), static_cast<int>(job.user.size()), SQLITE_TRANSIENT);
        sqlite3_bind_int64(insert.get(), 2, job.uid);
        sqlite3_bind_int64(insert.get(), 3, job.submit_time);
        sqlite3_bind_blob(insert.get(), 4, spec.data(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
        LOOM_TRY(insert.step());
        ids.emplace_back(static_cast<JobId::rep>(sqlite3_last_insert_rowid(db_.get())));
        LOOM_TRY(insert.reset());
      }
      return ids;
    });
  }

  Status update_jobs(std::span<const JobUpdate> updates) override {
    Result<bool> done = transaction([&]() -> Result<bool> {
      Statement update = LOOM_TRY(db_.prepare(
          "UPDATE jobs SET state = ?, reason = ?, exit_code = coalesce(?, exit_code), "
          "signal = coalesce(?, signal), start_time = coalesce(?, start_time), "
          "end_time = coalesce(?, end_time), placement = coalesce(?, placement) WHERE id = ?"));
      for (const JobUpdate& u : updates) {
        sqlite3_stmt* s = update.get();
        sqlite3_bind_int(s, 1, u.state);
        sqlite3_bind_text(s, 2, u.reason.data(), static_cast<int>(u.reason.size()), SQLITE_TRANSIENT);
        bind_optional(s, 3, u.exit_code);
        bind_optional(s, 4, u.signal);
        bind_optional(s, 5, u.start_time);
        bind_optional(s, 6, u.end_time);
        if (u.placement) {
          sqlite3_bind_text(s, 7, u.placement->data(), static_cast<int>(u.placement->size()), SQLITE_TRANSIENT);
        }
        sqlite3_bind_int64(s, 8, static_cast<sqlite3_int64>(u.id.value()));
        LOOM_TRY(update.step());
        if (sqlite3_changes(db_.get()) != 1) {
          return make_error(ErrorCode::kNotFound, fmt::format("job {} does not exist", u.id.value()));
        }
        LOOM_TRY(update.reset());
      }
      return true;
    });
    if (!done) return std::unexpected(std::move(done).error());
    return {};
  }

  Result<std::vector<JobRow>> load_jobs(bool unfinished_only) const override {
    Statement select = LOOM_TRY(db_.prepare(
        unfinished_only ? "SELECT id, user, uid, state, reason, exit_code, signal, submit_time, start_time, "
                          "end_time, spec, placement FROM jobs WHERE state < 4 ORDER BY id"
                        : "SELECT id, user, uid, state, reason, exit_code, signal, submit_time, start_time, "
                          "end_time, spec, placement FROM jobs ORDER BY id"));
    std::vector<JobRow> rows;
    while (LOOM_TRY(select.step()) == SQLITE_ROW) {
      sqlite3_stmt* s = select.get();
      JobRow row;
      row.id = JobId(static_cast<JobId::rep>(sqlite3_column_int64(s, 0)));
      row.user = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
      row.uid = static_cast<std::uint32_t>(sqlite3_column_int64(s, 2));
      row.state = static_cast<v1::JobState>(sqlite3_column_int(s, 3));
      row.reason = reinterpret_cast<const char*>(sqlite3_column_text(s, 4));
      row.exit_code = optional_int(s, 5);
      row.signal = optional_int(s, 6);
      row.submit_time = sqlite3_column_int64(s, 7);
      row.start_time = optional_int64(s, 8);
      row.end_time = optional_int64(s, 9);
      const void* blob = sqlite3_column_blob(s, 10);
      if (!row.spec.ParseFromArray(blob, sqlite3_column_bytes(s, 10))) {
        return make_error(ErrorCode::kDataLoss, fmt::format("job {}: its stored spec does not parse", row.id.value()));
      }
      row.placement = reinterpret_cast<const char*>(sqlite3_column_text(s, 11));
      rows.push_back(std::move(row));
    }
    return rows;
  }

 private:
  template <typename T>
  static void bind_optional(sqlite3_stmt* s, int index, const std::optional<T>& value) {
    if (value) sqlite3_bind_int64(s, index, *value);
  }
  static std::optional<int> optional_int(sqlite3_stmt* s, int column) {
    if (sqlite3_column_type(s, column) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int(s, column);
  }
  static std::optional<std::int64_t> optional_int64(sqlite3_stmt* s, int column) {
    if (sqlite3_column_type(s, column) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(s, column);
  }

  // Runs body inside BEGIN IMMEDIATE ... COMMIT; rolls back on any error.
  template <typename Body>
  auto transaction(Body body) -> decltype(body()) {
    LOOM_TRY(db_.exec("BEGIN IMMEDIATE"));
    auto result = body();
    if (!result) {
      (void)db_.exec("ROLLBACK");
      return result;
    }
    if (Status committed = db_.exec("COMMIT"); !committed) {
      (void)db_.exec("ROLLBACK");
      return std::unexpected(std::move(committed).error());
    }
    return result;
  }

  Database db_;
};

}  // namespace

int store_schema_version() { return static_cast<int>(kMigrations.size()); }

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("cannot create the state directory {}: {}", state_dir.string(), ec.message()));
  }
  ::chmod(state_dir.c_str(), 0700);  // job specs and credentials' owners live here
  Database db = LOOM_TRY(Database::open((state_dir / "state.db").string()));
  auto store = std::make_unique<SqliteStore>(std::move(db));
  LOOM_TRY(with_context(store->migrate(), fmt::format("state {}", (state_dir / "state.db").string())));
  return store;
}

}  // namespace loom::controller
