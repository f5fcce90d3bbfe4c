// The job manager's part of loomctld's /metrics: what `loom queue`, `loom nodes` and the
// accounts show, as numbers to watch.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "job_states.hpp"
#include "loom/controller/job_manager.hpp"

namespace loom::controller {

namespace {

// "RUNNING" as Prometheus' label values are usually written: "running".
std::string lower(std::string_view name) {
  std::string out(name);
  std::ranges::transform(out, out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string state_label(v1::JobState state) { return lower(v1::JobState_Name(state)); }

std::string reason_label(v1::Reason reason) {
  return lower(v1::Reason_Name(reason).substr(std::string_view("REASON_").size()));
}

}  // namespace

void JobManager::Counted::ended(const JobRow& row) {
  ++ended_by_state[row.state];
  for (const v1::StagingFile& file : row.staging.files())
    (file.direction() == "in" ? staged_in_bytes : staged_out_bytes) += file.bytes_done();
}

void JobManager::write_metrics(Exposition& out) const {
  std::map<std::pair<v1::JobState, v1::Reason>, std::uint64_t> jobs;
  for (const auto& [id, row] : jobs_) {
    if (!ended(row.state)) ++jobs[{row.state, as_shown(row).reason.code}];
  }
  out.family("loom_jobs", "gauge", "Jobs not ended, by state and reason code.");
  for (v1::JobState state : {v1::PENDING, v1::STAGING_IN, v1::RUNNING, v1::STAGING_OUT}) {
    bool any = false;
    for (const auto& [key, count] : jobs) {
      if (key.first != state) continue;
      out.sample("loom_jobs", {{"state", state_label(state)}, {"reason", reason_label(key.second)}},
                 static_cast<double>(count));
      any = true;
    }
    if (!any)  // a state with no job is 0, not absent: a query sees the drop
      out.sample("loom_jobs", {{"state", state_label(state)}, {"reason", "none"}}, 0);
  }
  out.family("loom_jobs_ended_total", "counter",
             "Jobs that ended since loomctld started, by how they ended.");
  for (const auto& [state, count] : counted_.ended_by_state)
    out.sample("loom_jobs_ended_total", {{"state", state_label(state)}},
               static_cast<double>(count));
  out.family("loom_job_queue_wait_seconds", "histogram",
             "From a job's submission to its start, for jobs started since loomctld started.");
  out.histogram("loom_job_queue_wait_seconds", counted_.queue_wait_seconds);
  out.family("loom_scheduling_pass_seconds", "histogram", "How long a scheduling pass took.");
  out.histogram("loom_scheduling_pass_seconds", counted_.pass_seconds);
  out.family("loom_staged_bytes_total", "counter",
             "Bytes jobs staged in and out, counted as each job ended, since loomctld started.");
  out.sample("loom_staged_bytes_total", {{"direction", "in"}},
             static_cast<double>(counted_.staged_in_bytes));
  out.sample("loom_staged_bytes_total", {{"direction", "out"}},
             static_cast<double>(counted_.staged_out_bytes));

  // The cluster: nodes by state; cores, memory and NVMe bytes, in all and held.
  std::map<sched::NodeState, std::uint64_t> nodes{
      {sched::NodeState::kUp, 0}, {sched::NodeState::kDrain, 0}, {sched::NodeState::kDown, 0}};
  sched::Resources free;
  for (std::size_t i = 0; i < cluster_.size(); ++i) {
    const NodeId node(static_cast<NodeId::rep>(i));
    ++nodes[cluster_.state(node)];
    for (const sched::DomainCapacity& d : cluster_.free(node).domains) {
      free.cores += d.cores;
      free.memory += d.memory;
    }
    for (std::uint64_t bytes : cluster_.free(node).nvme) free.nvme += bytes;
  }
  out.family("loom_nodes", "gauge", "Nodes, by state.");
  for (const auto& [state, count] : nodes)
    out.sample("loom_nodes", {{"state", sched::to_string(state)}}, static_cast<double>(count));
  auto pair = [&](std::string_view name, std::string_view held, std::string_view what,
                  std::uint64_t total, std::uint64_t unheld) {
    out.family(name, "gauge", fmt::format("The cluster's {}, on every node.", what));
    out.sample(name, {}, static_cast<double>(total));
    out.family(held, "gauge", fmt::format("The cluster's {} that jobs and buffers hold.", what));
    out.sample(held, {}, static_cast<double>(total - unheld));
  };
  pair("loom_cluster_cores", "loom_cluster_cores_used", "cores", cluster_.total_cores(),
       free.cores);
  pair("loom_cluster_memory_bytes", "loom_cluster_memory_used_bytes", "memory",
       cluster_.total_memory(), free.memory);
  pair("loom_cluster_nvme_bytes", "loom_cluster_nvme_used_bytes", "NVMe bytes",
       cluster_.total_nvme(), free.nvme);

  // Accounts: what each holds, its fair-share usage and shares, its jobs and its limits.
  const sched::FairShare& share = scheduler_.fair_share();
  std::vector<std::string> accounts = share.sort();
  std::ranges::sort(accounts);
  out.family("loom_account_cores_used", "gauge", "Cores an account's running jobs hold.");
  for (const std::string& a : accounts)
    out.sample("loom_account_cores_used", {{"account", a}},
               static_cast<double>(share.allocation(a).cores));
  out.family("loom_account_nvme_used_bytes", "gauge",
             "Burst-buffer bytes an account's running jobs hold.");
  for (const std::string& a : accounts)
    out.sample("loom_account_nvme_used_bytes", {{"account", a}},
               static_cast<double>(share.allocation(a).nvme));
  out.family("loom_account_fair_share_usage", "gauge",
             "An account's dominant share now and decayed over the half-life, averaged "
             "(sched/fair_share.hpp), from 0 to 1.");
  for (const std::string& a : accounts)
    out.sample("loom_account_fair_share_usage", {{"account", a}},
               (share.dominant_share(a) + share.average(a)) / 2);
  out.family("loom_account_jobs", "gauge", "An account's pending and running jobs.");
  for (const std::string& a : accounts) {
    const sched::AccountJobs j = scheduler_.jobs_of(a);
    out.sample("loom_account_jobs", {{"account", a}, {"state", "pending"}},
               static_cast<double>(j.pending));
    out.sample("loom_account_jobs", {{"account", a}, {"state", "running"}},
               static_cast<double>(j.running));
  }
  out.family("loom_account_limit", "gauge",
             "An account's configured limits: cores, memory_bytes, nvme_bytes, running_jobs, "
             "submitted_jobs, walltime_seconds.");
  for (const Config::Account& a : scheduler_.accounts()) {
    const Config::AccountLimits& l = a.limits;
    auto limit = [&](std::string_view what, auto value) {
      if (value)
        out.sample("loom_account_limit", {{"account", a.name}, {"limit", what}},
                   static_cast<double>(*value));
    };
    limit("cores", l.cores);
    limit("memory_bytes", l.memory);
    limit("nvme_bytes", l.nvme);
    limit("running_jobs", l.running_jobs);
    limit("submitted_jobs", l.submitted_jobs);
    if (l.walltime)
      out.sample("loom_account_limit", {{"account", a.name}, {"limit", "walltime_seconds"}},
                 static_cast<double>(l.walltime->count()));
  }
}

}  // namespace loom::controller
