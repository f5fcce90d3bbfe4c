// A job's start on this node: its storage, then its tasks as the launch plan says; and an
// MPI job's daemon, when mpirun asks for it.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <span>

#include "agent_job.hpp"
#include "controller_link.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/host_name.hpp"
#include "loom/common/printable.hpp"
#include "loom/launch/hosts.hpp"
#include "loom/launch/plan.hpp"

namespace loom::agent {

namespace {

std::optional<std::filesystem::path> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::filesystem::path candidate = std::filesystem::path(dirs.substr(start, end - start)) / name;
    if (!dirs.substr(start, end - start).empty() && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

// A job's record once its tasks run: what adopts them after an agent restart.
JobRecord running(JobId id, const v1::Launch& launch, const v1::JobStarted& started,
                  std::vector<std::pair<std::uint32_t, TaskRecord>> ranks, bool daemon,
                  const PmixLink* pmix = nullptr) {
  JobRecord r;
  r.id = id;
  r.launch = launch;
  r.started = started;
  r.ranks = std::move(ranks);
  r.daemon = daemon;
  if (pmix != nullptr) r.pmix_server = pmix->server().record();
  return r;
}

}  // namespace

std::shared_ptr<Agent::Job> Agent::make_job(const v1::Launch& launch) {
  auto job = std::make_shared<Job>();
  job->id = JobId(launch.job());
  job->launch = launch;
  job->storage = std::make_unique<JobStorage>(launch, o_.name, o_.shm_dir, stagers_, kept_);
  job->level.tree = &cgroups_;
  job->level.name = launch::job_cgroup(o_.cgroup, job->id);
  return job;
}

void Agent::launch(const v1::Launch& launch) {
  auto job = make_job(launch);
  // Recorded before anything starts: an agent that dies while launching leaves a record
  // that says so (and which cgroups and slice to clean), never tasks that no record knows.
  JobRecord record;
  record.id = job->id;
  record.launch = launch;
  record.launching.emplace();
  for (const v1::Rank& rank : launch.ranks()) record.launching->push_back(rank.rank());
  save(record);
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_[job->id] = job;
  }
  lane(*job).post([this, job] {
    if (!stopped_.load() && start(job)) watch(job);
  });
}

// The job's slice and stage-in, then its tasks. False when it ended instead (reported), or
// when the agent stops meanwhile (the record says it was launching).
bool Agent::start(const std::shared_ptr<Job>& job) {
  const v1::Launch& launch = job->launch;
  if (auto prepared = job->storage->prepare(job->interrupted); !prepared) {
    if (stopped_.load()) return false;
    send_staging(*job);
    if (job->killed.load()) {
      end_killed(*job);
    } else {
      abandon(*job, prepared.error().reason, prepared.error().error.message());
    }
    return false;
  }
  send_staging(*job);
  std::unique_lock lock(job->mutex);
  if (stopped_.load()) return false;
  if (job->killed.load()) {
    lock.unlock();
    (void)job->storage->teardown();
    end_killed(*job);
    return false;
  }
  // Each rank's binding on this machine; reported as the ranks' binding once started.
  std::string error;
  v1::JobStarted started;
  std::vector<launch::RankBinding> bindings;
  for (const v1::Rank& rank : launch.ranks()) {
    const std::vector<unsigned> cores(rank.cores().begin(), rank.cores().end());
    auto binding = binder_.resolve(cores, rank.numa());
    if (!binding) {
      error = binding.error().to_string();
      break;
    }
    bindings.push_back({rank.rank(), binding->applied_pus, binding->applied_numa});
    v1::RankBinding* bound = started.add_ranks();
    bound->set_rank(rank.rank());
    for (unsigned pu : binding->applied_pus) bound->add_cpus(pu);
    if (binding->applied_numa) bound->add_numa(*binding->applied_numa);
  }
  const bool first_mpi_node = launch.spec().mpi() && launch.node_index() == 0;
  if (error.empty() && first_mpi_node) {
    if (auto resolved = launch::check_resolvable(launch::job_nodes(launch)); !resolved)
      error = resolved.error().to_string();
  }
  std::map<std::string, std::string> environment = job->storage->environment();
  if (!launch.persistent_device().empty()) {
    environment["LOOM_BB_PERSISTENT_DIR"] =
        burstbuffer::buffer_mount(launch.persistent_device(), launch.persistent_slice()).string();
  }
  const launch::NodeFacts node{o_.name,
                               loom::host_name(),
                               o_.cgroup,
                               o_.launcher_dir.string(),
                               launch::interface_network(o_.data_plane.fabric.interface),
                               o_.controller,
                               o_.tls_ca};
  std::vector<std::pair<std::uint32_t, TaskRecord>> ranks;
  if (error.empty()) {
    Result<launch::LaunchPlan> plan = launch::plan_launch(launch, bindings, environment, node);
    if (!plan) error = plan.error().message();
    if (plan && plan->daemon) job->daemon = task_spec(job->id, *plan->daemon);
    if (plan && plan->pmix_server) {
      auto link = PmixLink::start(cgroups_, task_spec(job->id, *plan->pmix_server), plan->pmix_job,
                                  o_.name);
      if (link) {
        job->pmix = std::move(*link);
      } else {
        error = link.error().to_string();
      }
    }
    const bool go = plan && error.empty();
    for (const launch::TaskPlan& t : go ? plan->tasks : std::span<const launch::TaskPlan>{}) {
      TaskSpec spec = task_spec(job->id, t);
      if (job->pmix) {
        for (const auto& [name, value] : job->pmix->environments().at(t.rank))
          spec.environment[name] = value;
      }
      auto task = Task::start(cgroups_, spec);
      if (!task) {
        error = task.error().to_string();
        break;
      }
      ranks.emplace_back(t.rank, task->record());
      job->tasks.push_back(std::move(*task));
    }
  }
  started.set_job(job->id.value());
  if (error.empty()) job->started = started;
  lock.unlock();
  if (!error.empty()) {
    abandon(*job, v1::REASON_LAUNCH_FAILED, error);
    return false;
  }
  save(running(job->id, launch, started, std::move(ranks), job->daemon.has_value(),
               job->pmix.get()));
  if (job->pmix) {
    job->pmix->listen([weak = std::weak_ptr<Job>(job)] {
      if (const std::shared_ptr<Job> j = weak.lock()) end_ranks(*j);
    });
  }
  v1::FromAgent message;
  *message.mutable_started() = started;
  link_->write(message);
  return !job->daemon;  // a node waiting for its daemon is watched once that starts
}

// What the agent adds to a planned task: its keeper, its status file, the node's limits.
TaskSpec Agent::task_spec(JobId job, const launch::TaskPlan& plan) const {
  TaskSpec t;
  t.cgroup_name = plan.cgroup_name;
  t.argv = plan.argv;
  t.environment = plan.environment;
  t.chdir = plan.chdir;
  t.stdout_path = plan.stdout_path;
  t.stderr_path = plan.stderr_path;
  t.umask = plan.umask;
  t.uid = plan.uid;
  hwtopo::Binding binding;
  binding.applied_pus = plan.binding.pus;
  binding.applied_numa = plan.binding.numa;
  t.binding = std::move(binding);
  t.memory_limit = plan.memory_limit;
  t.swap_limit = o_.swap;
  t.pids_max = o_.pids_max;
  t.allow_root = o_.allow_root;
  // job_<id>_rank_<r>, job_<id>_pmix: the leaf of its cgroup, unique in the job.
  const std::string leaf = plan.cgroup_name.substr(plan.cgroup_name.rfind('/') + 1);
  t.status_path = o_.state_dir / fmt::format("job_{}_{}.status", job.value(), leaf);
  t.keeper = o_.keeper;
  return t;
}

// Open MPI's daemon for an MPI job on this node, asked for by mpirun on the job's first
// node through loom-rsh and the controller, which checked who asks. Checked again here:
// only orted, as this agent's PATH finds it, only for a job that waits for it.
void Agent::exec(const v1::Exec& e) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(jobs_mutex_);
    if (auto it = jobs_.find(JobId(e.job())); it != jobs_.end()) job = it->second;
  }
  if (!job) {
    spdlog::warn("job {}: asked for Open MPI's daemon, but the job does not run here", e.job());
    return;
  }
  std::unique_lock lock(job->mutex);
  if (!job->daemon) {  // loom-rsh asked again, after a controller restart: nothing starts twice
    spdlog::info("job {}: Open MPI's daemon was started here already", e.job());
    return;
  }
  TaskSpec t = std::move(*job->daemon);
  job->daemon.reset();
  std::string error;
  auto arguments = launch::daemon_arguments({e.argv().begin(), e.argv().end()});
  const std::optional<std::filesystem::path> orted = find_program("orted");
  if (!arguments) {
    error = arguments.error().message();
  } else if (!orted) {
    error = "cannot find Open MPI's orted in the agent's PATH";
  } else {
    t.argv = {orted->string()};
    t.argv.insert(t.argv.end(), arguments->begin(), arguments->end());
    if (auto task = Task::start(cgroups_, t)) {
      save(running(job->id, job->launch, job->started,
                   {{job->launch.ranks(0).rank(), task->record()}}, false));
      job->tasks.push_back(std::move(*task));
    } else {
      error = task.error().to_string();
    }
  }
  lock.unlock();
  if (!error.empty()) {
    work_.post([this, job, error] {
      abandon(*job, v1::REASON_LAUNCH_FAILED, "Open MPI's daemon: " + error);
    });
    return;
  }
  spdlog::info("job {}: Open MPI's daemon started", e.job());
  watch(job);
}

// Makes or destroys a persistent buffer, and says so. A destroy names no device when the
// controller found the buffer left over on this node: every device is looked at.
void Agent::buffer(const v1::BufferCommand& c) {
  v1::FromAgent done;
  done.mutable_buffer()->set_slice(c.slice());
  done.mutable_buffer()->set_destroy(c.destroy());
  Status result;
  if (c.destroy()) {
    for (const Config::NvmeDevice& d : o_.nvme) {
      if (!c.device().empty() && d.path != c.device()) continue;
      auto found = burstbuffer::Slice::attach(burstbuffer::buffer_image(d.path, c.slice()),
                                              burstbuffer::buffer_mount(d.path, c.slice()));
      if (found) result = found->destroy();
    }
  } else if (!burstbuffer::Slice::attach(burstbuffer::buffer_image(c.device(), c.slice()),
                                         burstbuffer::buffer_mount(c.device(), c.slice()))) {
    result = kept_->with_room(c.device(), c.bytes(), [&]() -> Status {
      auto made = burstbuffer::Slice::create({burstbuffer::buffer_image(c.device(), c.slice()),
                                              burstbuffer::buffer_mount(c.device(), c.slice()),
                                              c.bytes(), c.uid(), c.gid(), 0700, true});
      if (!made) return std::unexpected(std::move(made).error());
      return {};
    });
  }
  if (!result) done.mutable_buffer()->set_error(valid_utf8(result.error().to_string()));
  spdlog::info("burst buffer {} {}{}", c.slice(), c.destroy() ? "destroyed" : "made",
               result ? "" : ": " + result.error().to_string());
  link_->write(done);
}

}  // namespace loom::agent
