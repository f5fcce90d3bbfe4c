// The job manager's reads: jobs as their users see them, from memory or, once they have
// left it (controller.min_job_age), from the store; and what leaves memory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>

#include "job_states.hpp"
#include "loom/controller/job_manager.hpp"

namespace loom::controller {

namespace {

// The id of job `id`, or of element `index` of the array `id`: elements are consecutive
// from the array's id (see Store::insert_jobs). Nullopt for an index no array has.
std::optional<JobId> element_id(JobId id, std::optional<std::uint32_t> index) {
  if (!index) return id;
  if (*index == 0 || id.value() > std::numeric_limits<JobId::rep>::max() - *index + 1)
    return std::nullopt;
  return JobId(id.value() + *index - 1);
}

}  // namespace

const JobRow* JobManager::visible(const Caller& caller, JobId id,
                                  std::optional<std::uint32_t> index) const {
  const std::optional<JobId> wanted = element_id(id, index);
  auto it = wanted ? jobs_.find(*wanted) : jobs_.end();
  // The array's other elements (its first, whose id it has) may have left memory already.
  if (it != jobs_.end() && index &&
      (it->second.array_job != id || it->second.array_index != *index))
    it = jobs_.end();
  if (it == jobs_.end() || (!caller.admin && it->second.uid != caller.uid)) return nullptr;
  return &it->second;
}

std::vector<JobRow> JobManager::list(const Caller& caller, bool include_ended, JobId after,
                                     std::size_t limit) const {
  std::vector<JobRow> out;
  for (auto it = jobs_.upper_bound(after); it != jobs_.end() && out.size() < limit; ++it) {
    const JobRow& row = it->second;
    if ((caller.admin || row.uid == caller.uid) && (include_ended || !ended(row.state)))
      out.push_back(as_shown(row));
  }
  return out;
}

Result<std::optional<JobRow>> JobManager::stored(const Caller& caller, JobId id,
                                                 std::optional<std::uint32_t> index) const {
  const std::optional<JobId> wanted = element_id(id, index);
  if (!wanted) return std::nullopt;
  std::optional<JobRow> row = LOOM_TRY(store_->load_job(*wanted));
  if (!row || (index && (row->array_job != id || row->array_index != *index)) ||
      (!caller.admin && row->uid != caller.uid)) {
    return std::nullopt;
  }
  return row;
}

Result<JobRow> JobManager::show(const Caller& caller, JobId id,
                                std::optional<std::uint32_t> index) const {
  if (const JobRow* row = visible(caller, id, index)) return as_shown(*row);
  std::optional<JobRow> old = LOOM_TRY(stored(caller, id, index));
  if (!old) return not_found(id, index);
  return *std::move(old);
}

Result<AcctPage> JobManager::accounting(const Caller& caller, AcctQuery query) const {
  if (!caller.admin) {
    if (!query.user.empty() && query.user != caller.user)
      return make_error(ErrorCode::kPermissionDenied,
                        fmt::format("--user {}: only admins see other users' jobs", query.user));
    query.user = caller.user;
  }
  // The store's pages, filtered; a few at most per call, so that a filter that matches
  // little does not hold the controller: the caller asks again from next_after.
  constexpr int kMostPages = 8;
  AcctPage page;
  HistoryQuery scan{query.since, query.until, query.user, query.after, query.limit};
  for (int i = 0; i < kMostPages; ++i) {
    const std::vector<JobRow> rows = LOOM_TRY(store_->load_history(scan));
    for (const JobRow& row : rows) {
      scan.after = row.id;
      if ((query.account.empty() || row.spec.account() == query.account) &&
          (!query.state || row.state == *query.state))
        page.jobs.push_back(row);
      if (page.jobs.size() == query.limit) {
        page.next_after = row.id;
        return page;
      }
    }
    if (rows.size() < scan.limit) return page;  // the store has no more
  }
  page.next_after = scan.after;
  return page;
}

void JobManager::ended_as_shown(JobRow& row) {
  // What it ran with is in the store; nothing shows it, and with `--export ALL` the
  // environment is most of a job's memory (about 5 KiB of 6).
  row.spec.clear_environment();
  row.spec.clear_script();
  ended_at_.emplace(row.end_time.value_or(0), row.id);
}

std::size_t JobManager::forget_ended(sched::Time before) {
  const std::int64_t cutoff = before.time_since_epoch().count();
  std::size_t forgotten = 0;
  while (!ended_at_.empty() && ended_at_.begin()->first < cutoff) {
    jobs_.erase(ended_at_.begin()->second);
    ended_at_.erase(ended_at_.begin());
    ++forgotten;
  }
  return forgotten;
}

JobRow JobManager::as_shown(JobRow row) const {
  if (auto it = unknown_.find(row.id); it != unknown_.end()) {
    row.reason = {v1::REASON_STATE_UNKNOWN,
                  fmt::format("waiting for {} to re-register", fmt::join(it->second, ", "))};
    return row;
  }
  if (row.state == v1::PENDING) {
    if (std::optional<std::string> limit = scheduler_.held_back(row.id))
      row.reason = {v1::REASON_ACCOUNT_LIMIT, std::move(*limit)};
    return row;
  }
  if (unreachable_.empty() || !active(row.state)) return row;
  for (const v1::PlacedNode& node : row.placement.nodes()) {
    if (auto it = unreachable_.find(node.node()); it != unreachable_.end()) {
      row.reason = {v1::REASON_NODE_UNREACHABLE, it->second};
      break;
    }
  }
  return row;
}

}  // namespace loom::controller
