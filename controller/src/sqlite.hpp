// Owners for SQLite handles (private to the controller).
#pragma once

#include <sqlite3.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "loom/common/error.hpp"

namespace loom::controller::detail {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  sqlite3_stmt* get() const { return stmt_; }
  // SQLITE_ROW, SQLITE_DONE, or an Error naming the statement.
  Result<int> step();
  Status reset();

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class Database {
 public:
  static Result<Database> open(const std::string& path);
  Database(Database&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), cache_(std::move(other.cache_)) {}
  Database& operator=(Database&&) = delete;
  ~Database() {
    cache_.clear();  // statements are finalized before the connection closes
    sqlite3_close(db_);
  }

  Status exec(std::string_view sql);
  Result<Statement> prepare(std::string_view sql) const;
  // The statement for `sql`, prepared once and kept, reset and unbound: for what runs at
  // every write (parsing it each time cost more than running it).
  Result<Statement*> cached(std::string_view sql);
  // Runs a cached statement that returns no rows (SAVEPOINT, COMMIT, ...).
  Status run(std::string_view sql);
  sqlite3* get() const { return db_; }
  Error error(std::string_view what) const;

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::map<std::string, Statement, std::less<>> cache_;
};

}  // namespace loom::controller::detail
