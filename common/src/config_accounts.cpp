// [[accounts]]: whom jobs are charged to, each account's shares of the cluster, who may
// charge it and its limits, as Slurm's associations hold them; and [[qos]], Slurm's QOS:
// a priority tier, who may use it, and whose jobs it may preempt.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

#include "config_values.hpp"
#include "loom/common/bytes.hpp"

namespace loom::config_detail {

namespace {

// A key's value inside one [[accounts]] table, or an error naming the key and its line.
class AccountReader {
 public:
  AccountReader(std::size_t index, const toml::node& node) : index_(index), node_(node) {}

  std::unexpected<Error> bad(std::string_view key, std::string_view what) const {
    return make_error(ErrorCode::kInvalidArgument, fmt::format("[{}].{} (line {}): {}", index_, key,
                                                               node_.source().begin.line, what));
  }
  Result<std::uint64_t> count(std::string_view key, std::uint64_t least) const {
    const auto n = node_.value<std::int64_t>();
    if (!node_.is_integer() || !n || *n < static_cast<std::int64_t>(least))
      return bad(key, fmt::format("must be an integer of {} or more", least));
    return static_cast<std::uint64_t>(*n);
  }
  Result<std::uint64_t> bytes(std::string_view key) const {
    auto text = as_string(node_);
    if (!text) return bad(key, "must be a size, as \"4TiB\"");
    auto parsed = parse_bytes(*text);
    if (!parsed) return bad(key, parsed.error().message());
    return parsed->count();
  }
  Result<std::chrono::seconds> duration(std::string_view key) const {
    auto text = as_string(node_);
    if (!text) return bad(key, "must be a duration, as \"1-00:00:00\"");
    auto parsed = parse_duration(*text);
    if (!parsed || parsed->count() <= 0)
      return bad(key, parsed ? "must be longer than 0" : parsed.error().message());
    return *parsed;
  }
  Result<std::string> name(std::string_view key) const {
    auto text = as_string(node_);
    if (!text || text->empty() || text->find_first_of(" \t\n,") != std::string::npos)
      return bad(key, "must be a name without spaces or commas");
    return *text;
  }
  Result<std::vector<std::string>> names(std::string_view key) const {
    const toml::array* array = node_.as_array();
    if (array == nullptr) return bad(key, "must be an array of names");
    std::vector<std::string> out;
    for (const toml::node& item : *array)
      out.push_back(LOOM_TRY(AccountReader(index_, item).name(key)));
    return out;
  }

 private:
  std::size_t index_;
  const toml::node& node_;
};

Result<Config::Account> read_account(std::size_t index, const toml::table& table) {
  Config::Account account;
  Config::AccountLimits& limits = account.limits;
  for (const auto& [key_name, node] : table) {
    const std::string_view key = key_name.str();
    const AccountReader value(index, node);
    if (key == "name") {
      account.name = LOOM_TRY(value.name(key));
    } else if (key == "shares") {
      account.shares = LOOM_TRY(value.count(key, 1));
    } else if (key == "users") {
      account.users = LOOM_TRY(value.names(key));
    } else if (key == "group") {
      account.group = LOOM_TRY(value.name(key));
    } else if (key == "max_cores") {
      limits.cores = LOOM_TRY(value.count(key, 1));
    } else if (key == "max_memory") {
      limits.memory = LOOM_TRY(value.bytes(key));
    } else if (key == "max_nvme") {
      limits.nvme = LOOM_TRY(value.bytes(key));
    } else if (key == "max_running_jobs") {
      limits.running_jobs = LOOM_TRY(value.count(key, 1));
    } else if (key == "max_submitted_jobs") {
      limits.submitted_jobs = LOOM_TRY(value.count(key, 1));
    } else if (key == "max_walltime") {
      limits.walltime = LOOM_TRY(value.duration(key));
    } else {
      return value.bad(key,
                       "unknown key (name, shares, users, group, max_cores, max_memory, "
                       "max_nvme, max_running_jobs, max_submitted_jobs, max_walltime)");
    }
  }
  if (account.name.empty())
    return make_error(ErrorCode::kInvalidArgument, fmt::format("[{}] (line {}): needs a name",
                                                               index, table.source().begin.line));
  return account;
}

Result<Config::Qos> read_qos(std::size_t index, const toml::table& table) {
  Config::Qos qos;
  for (const auto& [key_name, node] : table) {
    const std::string_view key = key_name.str();
    const AccountReader value(index, node);
    if (key == "name") {
      qos.name = LOOM_TRY(value.name(key));
    } else if (key == "priority") {
      qos.priority = LOOM_TRY(value.count(key, 0));
    } else if (key == "users") {
      qos.users = LOOM_TRY(value.names(key));
    } else if (key == "group") {
      qos.group = LOOM_TRY(value.name(key));
    } else if (key == "preempt") {
      qos.preempt = LOOM_TRY(value.names(key));
    } else if (key == "preempt_mode") {
      const std::string mode = LOOM_TRY(value.name(key));
      if (mode != "requeue" && mode != "cancel")
        return value.bad(key, R"(must be "requeue" or "cancel")");
      qos.requeue = mode == "requeue";
    } else {
      return value.bad(key, "unknown key (name, priority, users, group, preempt, preempt_mode)");
    }
  }
  if (qos.name.empty())
    return make_error(ErrorCode::kInvalidArgument, fmt::format("[{}] (line {}): needs a name",
                                                               index, table.source().begin.line));
  return qos;
}

// A QOS preempting itself, or one it preempts preempting it back however far round: jobs
// would take each other's nodes forever. Names the first QOS found on a cycle.
Status check_preemption(const std::vector<Config::Qos>& all, const toml::array& tables) {
  std::map<std::string, const Config::Qos*> by_name;
  for (const Config::Qos& q : all) by_name.emplace(q.name, &q);
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto line = tables[i].source().begin.line;
    std::set<std::string> seen;
    std::vector<std::string> frontier = all[i].preempt;
    while (!frontier.empty()) {
      const std::string next = frontier.back();
      frontier.pop_back();
      if (next == all[i].name)
        return make_error(
            ErrorCode::kInvalidArgument,
            fmt::format("[{}].preempt (line {}): \"{}\" would preempt itself{}", i, line, next,
                        std::ranges::find(all[i].preempt, next) != all[i].preempt.end()
                            ? ""
                            : " through the QOS it preempts"));
      auto it = by_name.find(next);
      if (it == by_name.end()) {
        if (next == "normal") continue;  // normal preempts nothing unless configured
        return make_error(
            ErrorCode::kInvalidArgument,
            fmt::format("[{}].preempt (line {}): no QOS named \"{}\"", i, line, next));
      }
      if (seen.insert(next).second)
        frontier.insert(frontier.end(), it->second->preempt.begin(), it->second->preempt.end());
    }
  }
  return {};
}

// [[kind]] tables, each read by `read`, no two of one name.
template <class T>
Result<std::vector<T>> read_tables(const toml::node& value, std::string_view kind,
                                   std::string_view noun,
                                   Result<T> (*read)(std::size_t, const toml::table&)) {
  const toml::array* tables = value.as_array();
  if (tables == nullptr)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("must be [[{}]] tables, got {}", kind, type_name(value)));
  std::vector<T> out;
  std::set<std::string> names;
  for (std::size_t i = 0; i < tables->size(); ++i) {
    const toml::table* table = (*tables)[i].as_table();
    if (table == nullptr)
      return make_error(ErrorCode::kInvalidArgument, fmt::format("[{}]: must be a table", i));
    T item = LOOM_TRY(read(i, *table));
    if (!names.insert(item.name).second)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("[{}] (line {}): a second {} named \"{}\"", i,
                                    table->source().begin.line, noun, item.name));
    out.push_back(std::move(item));
  }
  return out;
}

std::string written(const Config::Account& a) {
  std::vector<std::string> fields{fmt::format("name = \"{}\"", a.name),
                                  fmt::format("shares = {}", a.shares)};
  if (!a.users.empty())
    fields.push_back(fmt::format("users = [\"{}\"]", fmt::join(a.users, "\", \"")));
  if (!a.group.empty()) fields.push_back(fmt::format("group = \"{}\"", a.group));
  const Config::AccountLimits& l = a.limits;
  if (l.cores) fields.push_back(fmt::format("max_cores = {}", *l.cores));
  if (l.memory)
    fields.push_back(fmt::format("max_memory = \"{}\"", format_bytes(Bytes(*l.memory))));
  if (l.nvme) fields.push_back(fmt::format("max_nvme = \"{}\"", format_bytes(Bytes(*l.nvme))));
  if (l.running_jobs) fields.push_back(fmt::format("max_running_jobs = {}", *l.running_jobs));
  if (l.submitted_jobs) fields.push_back(fmt::format("max_submitted_jobs = {}", *l.submitted_jobs));
  if (l.walltime)
    fields.push_back(fmt::format("max_walltime = \"{}\"", format_duration(*l.walltime)));
  return fmt::format("{{ {} }}", fmt::join(fields, ", "));
}

const std::array kAccountKeys = {
    KeySpec{
        {"accounts", "array of tables", "[]",
         "The accounts jobs are charged to (-A), one [[accounts]] table each: name; shares "
         "(an integer, 1 or more: its part of the cluster against the others', for "
         "scheduler.order = \"fairshare\" or \"priority\"); users (who may charge it: the "
         "first account listing a user is the one their jobs are charged to without -A) and "
         "group (a Unix group whose members may too); and limits, each optional: max_cores, "
         "max_memory, max_nvme (what its running jobs, and for max_nvme its persistent "
         "buffers, hold at once: a job that would pass one waits, PENDING with the reason "
         "AccountLimit; a buffer is refused), max_running_jobs, "
         "max_submitted_jobs (pending and running: more are refused at submit) and "
         "max_walltime (longer jobs are refused at submit). With accounts, a user in none "
         "may not submit; admins may charge any. SIGHUP applies a change."},
        [](Config& config, const toml::node& value) -> Status {
          std::vector<Config::Account> accounts =
              LOOM_TRY(read_tables(value, "accounts", "account", read_account));
          config.accounts = std::move(accounts);
          return {};
        },
        [](const Config& config) {
          std::vector<std::string> out;
          out.reserve(config.accounts.size());
          for (const Config::Account& a : config.accounts) out.push_back(written(a));
          return fmt::format("[{}]", fmt::join(out, ", "));
        },
    },
    KeySpec{
        {"qos", "array of tables", "[]",
         "Qualities of service (--qos), one [[qos]] table each: name; priority (an integer: "
         "pending jobs of a higher QOS go first, whatever scheduler.order says); users and "
         "group (who may use it; neither: everybody); preempt (the QOS whose running jobs its "
         "jobs may stop when they cannot start: the fewest that free room, lowest QOS and "
         "youngest first) and preempt_mode (\"requeue\": SIGTERM, controller.kill_grace, "
         "SIGKILL, then PENDING again, its id kept; \"cancel\": CANCELLED). A job without "
         "--qos is \"normal\", priority 0 unless a table says otherwise. A QOS that would "
         "preempt itself, directly or round a cycle, is refused. SIGHUP applies a change."},
        [](Config& config, const toml::node& value) -> Status {
          std::vector<Config::Qos> all = LOOM_TRY(read_tables(value, "qos", "QOS", read_qos));
          LOOM_TRY(check_preemption(all, *value.as_array()));
          config.qos = std::move(all);
          return {};
        },
        [](const Config& config) {
          std::vector<std::string> out;
          out.reserve(config.qos.size());
          for (const Config::Qos& q : config.qos) {
            std::vector<std::string> fields{fmt::format("name = \"{}\"", q.name),
                                            fmt::format("priority = {}", q.priority)};
            if (!q.users.empty())
              fields.push_back(fmt::format("users = [\"{}\"]", fmt::join(q.users, "\", \"")));
            if (!q.group.empty()) fields.push_back(fmt::format("group = \"{}\"", q.group));
            if (!q.preempt.empty())
              fields.push_back(fmt::format("preempt = [\"{}\"]", fmt::join(q.preempt, "\", \"")));
            fields.push_back(
                fmt::format("preempt_mode = \"{}\"", q.requeue ? "requeue" : "cancel"));
            out.push_back(fmt::format("{{ {} }}", fmt::join(fields, ", ")));
          }
          return fmt::format("[{}]", fmt::join(out, ", "));
        },
    },
};

}  // namespace

std::span<const KeySpec> account_keys() { return kAccountKeys; }

}  // namespace loom::config_detail
