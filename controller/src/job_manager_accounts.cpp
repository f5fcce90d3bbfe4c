// Whom a job is charged to, and what its account allows: checked at submit, so that a job
// its account could never run, or may not queue, is refused naming the limit.
#include <fmt/format.h>

#include <algorithm>

#include "loom/common/bytes.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/munge.hpp"
#include "loom/controller/job_manager.hpp"

namespace loom::controller {

namespace {

// Listed, or in its group (for a QOS, neither given: everybody); root only when listed (in_group
// admits root to every group, and an admin's job is charged to none unless it says or root is
// listed).
template <class Listing>
bool member(const Caller& caller, const Listing& listing) {
  if (std::ranges::find(listing.users, caller.user) != listing.users.end()) return true;
  return !listing.group.empty() && caller.uid != 0 &&
         in_group(Identity{caller.uid, caller.gid, caller.user}, listing.group);
}

}  // namespace

Result<std::string> JobManager::account_of(const Caller& caller, const std::string& asked) const {
  const std::vector<Config::Account>& accounts = scheduler_.accounts();
  if (accounts.empty()) return asked;  // none configured: -A is a label
  if (asked.empty()) {
    for (const Config::Account& account : accounts) {
      if (member(caller, account)) return account.name;
    }
    if (caller.admin) return asked;  // an admin's job may be charged to none
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("{} is in no account, and every job is charged to one: an "
                                  "admin adds users to [[accounts]]",
                                  caller.user));
  }
  const Config::Account* account = scheduler_.account(asked);
  if (account == nullptr)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--account {}: there is no such account", asked));
  if (!caller.admin && !member(caller, *account))
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("--account {}: {} is not in it", asked, caller.user));
  return asked;
}

Status JobManager::may_use_qos(const Caller& caller, const std::string& name) const {
  const Config::Qos* qos = scheduler_.qos(name);
  if (qos == nullptr) {
    if (name.empty() || name == "normal") return {};
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--qos {}: there is no such QOS", name));
  }
  if (caller.admin || (qos->users.empty() && qos->group.empty()) || member(caller, *qos)) return {};
  return make_error(ErrorCode::kPermissionDenied,
                    fmt::format("--qos {}: {} may not use it", name, caller.user));
}

Status JobManager::within_limits(const sched::JobSpec& spec, std::uint64_t jobs) const {
  const Config::Account* account = scheduler_.account(spec.account);
  if (account == nullptr) return {};
  const Config::AccountLimits& limits = account->limits;
  // Only max_submitted_jobs may pass by waiting: the rest never would.
  auto refuse = [&](std::string_view what, ErrorCode code = ErrorCode::kInvalidArgument) {
    return make_error(code, fmt::format("account {}: {}", account->name, what));
  };
  if (limits.walltime && spec.walltime > *limits.walltime)
    return refuse(fmt::format("--time {} is longer than its max_walltime {}",
                              format_duration(spec.walltime), format_duration(*limits.walltime)));
  const sched::AccountJobs queued = scheduler_.jobs_of(account->name);
  if (limits.submitted_jobs && queued.pending + queued.running + jobs > *limits.submitted_jobs)
    return refuse(fmt::format("{} job{} more would pass its max_submitted_jobs {} ({} pending, {} "
                              "running)",
                              jobs, jobs == 1 ? "" : "s", *limits.submitted_jobs, queued.pending,
                              queued.running),
                  ErrorCode::kResourceExhausted);
  // A job that alone holds more than a limit would wait forever.
  const sched::Resources least = sched::requested(sched::make_request(spec));
  if (limits.cores && least.cores > *limits.cores)
    return refuse(fmt::format("the job's {} cores are more than its max_cores {}", least.cores,
                              *limits.cores));
  if (limits.memory && least.memory > *limits.memory)
    return refuse(fmt::format("the job's {} of memory is more than its max_memory {}",
                              format_bytes(Bytes(least.memory)),
                              format_bytes(Bytes(*limits.memory))));
  if (limits.nvme && least.nvme > *limits.nvme)
    return refuse(fmt::format("the job's {} of burst buffer is more than its max_nvme {}",
                              format_bytes(Bytes(least.nvme)), format_bytes(Bytes(*limits.nvme))));
  return {};
}

Status JobManager::nvme_within_limit(const std::string& name, std::uint64_t bytes) const {
  const Config::Account* account = scheduler_.account(name);
  if (account == nullptr || !account->limits.nvme) return {};
  const std::uint64_t held = scheduler_.fair_share().allocation(name).nvme;
  if (held + bytes <= *account->limits.nvme) return {};
  return make_error(
      ErrorCode::kResourceExhausted,
      fmt::format("account {}: --size {} would pass its max_nvme {} ({} held)", name,
                  format_bytes(Bytes(bytes)), format_bytes(Bytes(*account->limits.nvme)),
                  format_bytes(Bytes(held))));
}

}  // namespace loom::controller
