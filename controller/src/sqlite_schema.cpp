#include "sqlite_schema.hpp"

#include <fmt/format.h>

#include "loom/controller/store.hpp"

namespace loom::controller {

int store_schema_version() { return static_cast<int>(detail::kMigrations.size()); }

namespace detail {

Status migrate(Database& db) {
  // Durability: WAL with a full fsync at every commit, as the controller acknowledges only
  // what is on disk.
  LOOM_TRY(db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  LOOM_TRY(
      db.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"));
  int version = 0;
  {  // finalized before any migration: DROP TABLE fails while a statement is open
    Statement read = LOOM_TRY(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'"));
    if (LOOM_TRY(read.step()) == SQLITE_ROW) version = sqlite3_column_int(read.get(), 0);
  }
  if (version > store_schema_version()) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format("the state was written by a newer Loom (schema {}; this one knows up to {})",
                    version, store_schema_version()));
  }
  for (; version < store_schema_version(); ++version) {
    LOOM_TRY(db.exec("BEGIN IMMEDIATE"));
    Status step = db.exec(kMigrations[static_cast<std::size_t>(version)]);
    if (step) {
      step =
          db.exec(fmt::format("INSERT INTO meta(key, value) VALUES('schema_version', {}) "
                              "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                              version + 1));
    }
    if (!step) {
      (void)db.exec("ROLLBACK");
      return std::unexpected(std::move(step).error().with_context(
          fmt::format("migrating the state to schema {}", version + 1)));
    }
    LOOM_TRY(db.exec("COMMIT"));
  }
  return {};
}

}  // namespace detail
}  // namespace loom::controller
