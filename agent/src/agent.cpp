// The agent's stream to the controller, and its threads: from start to an orderly stop.
#include "loom/agent/agent.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent_job.hpp"
#include "controller_link.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/munge.hpp"

namespace loom::agent {

Result<std::unique_ptr<Agent>> Agent::make(AgentOptions options, hwtopo::Binder binder,
                                           CgroupTree cgroups, JobRecords records) {
  auto watcher = LOOM_TRY(ExitWatcher::open());
  return std::unique_ptr<Agent>(new Agent(std::move(options), std::move(binder), std::move(cgroups),
                                          std::move(records), std::move(watcher)));
}

Agent::Agent(AgentOptions options, hwtopo::Binder binder, CgroupTree cgroups, JobRecords records,
             std::unique_ptr<ExitWatcher> watcher)
    : o_(std::move(options)),
      records_(std::move(records)),
      binder_(std::move(binder)),
      cgroups_(std::move(cgroups)),
      stagers_(std::make_shared<StagerPool>(o_.data_plane)),
      kept_(std::make_shared<const KeptSlices>(o_.nvme)),
      link_(std::make_unique<ControllerLink>(o_.controller, o_.data_plane.tls.channel())),
      watcher_(std::move(watcher)),
      work_(o_.workers) {}

Agent::~Agent() = default;

int Agent::run(const std::string& topology_json) {
  recover();
  std::thread beat([this] { send_heartbeats(); });
  std::thread killer([this] { keep_deadlines(); });
  int status = 0;
  for (auto retry = std::chrono::milliseconds(100); !stopped_.load();) {
    grpc::Status ended;
    if (auto credential = munge_credential(); !credential) {
      ended = {grpc::StatusCode::UNAUTHENTICATED, credential.error().to_string()};
    } else {
      auto greeting = [&] {
        std::vector<v1::FromAgent> messages{hello(topology_json)};
        messages.front().mutable_hello()->set_credential(*credential);
        for (v1::FromAgent& started : started_jobs()) messages.push_back(std::move(started));
        return messages;
      };
      ended = link_->serve(greeting, [this](const v1::ToAgent& c) { command(c); });
    }
    if (stopped_.load()) break;
    if (ended.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
        ended.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        ended.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        ended.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      (void)std::fprintf(stderr, "loomd: the controller refused this agent: %s\n",
                         ended.error_message().c_str());
      status = 1;
      break;
    }
    spdlog::warn("lost the controller at {} ({}); reconnecting, this node's jobs keep running",
                 o_.controller, ended.error_message());
    std::unique_lock lock(jobs_mutex_);
    wake_.wait_for(lock, retry, [this] { return stopped_.load(); });
    retry = std::min<std::chrono::milliseconds>(retry * 2, std::chrono::seconds(2));
  }
  stop();
  beat.join();
  killer.join();
  leave();
  return status;
}

void Agent::stop() {
  {
    std::lock_guard lock(jobs_mutex_);
    stopped_.store(true);
    for (const auto& [id, job] : jobs_) job->interrupted.store(true);
  }
  wake_.notify_all();
  link_->cancel();
}

// What was started stays started: the watcher and the pools stop (work queued for a job
// sees the stop and leaves it as recorded), and every task is left to its keeper.
void Agent::leave() {
  watcher_->stop();
  copies_.stop();
  work_.stop();
  std::lock_guard lock(jobs_mutex_);
  std::size_t left = 0;
  for (const auto& [id, job] : jobs_) {
    std::lock_guard tasks(job->mutex);
    for (Task& task : job->tasks) (void)std::move(task).detach();
    left += job->tasks.size();
    job->level.tree = nullptr;
  }
  spdlog::info("left {} job(s), {} task(s), running for the next agent", jobs_.size(), left);
}

v1::FromAgent Agent::hello(const std::string& topology_json) {
  v1::FromAgent message;
  auto* h = message.mutable_hello();
  h->set_name(o_.name);
  h->set_topology_json(topology_json);
  h->set_data_address(o_.data_address);
  v1::CgroupInfo* cgroup = h->mutable_cgroup();
  cgroup->set_version(cgroups_.version() == CgroupVersion::kV2 ? "v2" : "v1");
  cgroup->set_layout(cgroups_.layout());
  for (const std::string& c : cgroups_.enforced()) cgroup->add_enforced(c);
  for (const std::string& note : cgroups_.notes()) cgroup->add_not_enforced(note);
  for (const Config::NvmeDevice& d : o_.nvme) {
    v1::NvmeDevice* device = h->add_nvme();
    device->set_path(d.path);
    if (d.numa) device->set_numa(*d.numa);
    device->set_capacity(d.capacity);
    for (const std::string& slice : burstbuffer::buffers_on(d.path)) h->add_buffers(slice);
  }
  for (std::uint64_t job : kept_->jobs()) h->add_kept_slices(job);
  std::lock_guard lock(jobs_mutex_);
  for (const auto& [id, job] : jobs_) h->add_running(id.value());
  for (const auto& [id, e] : ended_) *h->add_ended() = e;
  return message;
}

void Agent::command(const v1::ToAgent& c) {
  if (c.has_registered()) spdlog::info("registered with {} as {}", o_.controller, o_.name);
  if (c.has_launch()) launch(c.launch());
  if (c.has_kill()) kill(c.kill());
  if (c.has_exec()) exec(c.exec());
  if (c.has_forget()) forget(JobId(c.forget().job()));
  if (c.has_buffer()) work_.post([this, b = c.buffer()] { buffer(b); });
  if (c.has_drop_slice()) work_.post([this, job = c.drop_slice().job()] { kept_->drop(job); });
}

// Every job here whose tasks started, as it was reported then.
std::vector<v1::FromAgent> Agent::started_jobs() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(jobs_mutex_);
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  std::vector<v1::FromAgent> messages;
  for (const std::shared_ptr<Job>& job : jobs) {
    std::lock_guard lock(job->mutex);
    if (job->started.job() != 0) *messages.emplace_back().mutable_started() = job->started;
  }
  return messages;
}

// Every heartbeat interval: a heartbeat, and the progress of every copy under way.
void Agent::send_heartbeats() {
  v1::FromAgent beat;
  beat.mutable_heartbeat();
  std::unique_lock lock(jobs_mutex_);
  while (!stopped_.load()) {
    wake_.wait_for(lock, o_.heartbeat, [this] { return stopped_.load(); });
    std::vector<v1::FromAgent> reports;
    for (const auto& [id, job] : jobs_) {
      if (job->storage->staging())
        *reports.emplace_back().mutable_staging() = job->storage->report();
    }
    lock.unlock();
    link_->write(beat);
    for (const v1::FromAgent& report : reports) link_->write(report);
    lock.lock();
  }
}

// SIGKILLs each job whose grace period has run out, if it still runs; and, once every
// heartbeat interval, the controller's silence: a stream silent for the heartbeat window is
// made again (a network that dropped it without a word), and a silence past
// agent.fence_after fences the --requeue jobs. Nothing here waits on the network.
void Agent::keep_deadlines() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point next_look = Clock::now();
  std::unique_lock lock(jobs_mutex_);
  while (!stopped_.load()) {
    if (Clock::now() >= next_look) {
      lock.unlock();
      if (link_->silence() > o_.silent_after) {
        spdlog::warn("no word from the controller at {} for {} s; connecting again", o_.controller,
                     std::chrono::duration_cast<std::chrono::seconds>(link_->silence()).count());
        link_->reset();
      }
      if (Clock::now() - link_->heard() > o_.fence_after) fence();
      lock.lock();
      next_look = Clock::now() + o_.heartbeat;
      continue;
    }
    Clock::time_point wake = next_look;
    if (!kill_at_.empty()) wake = std::min(wake, kill_at_.begin()->first);
    if (wake_.wait_until(lock, wake) != std::cv_status::timeout)
      continue;  // re-check: stopped, or new or earlier kills
    if (kill_at_.empty() || kill_at_.begin()->first > Clock::now()) continue;
    const JobId id = kill_at_.begin()->second;
    kill_at_.erase(kill_at_.begin());
    if (auto it = jobs_.find(id); it != jobs_.end()) {
      spdlog::info("job {}: still running when its kill grace ran out; SIGKILL", id.value());
      std::lock_guard tasks(it->second->mutex);
      for (Task& task : it->second->tasks) (void)task.kill();
    }
  }
}

void Agent::fence() {
  const auto heard = link_->heard();
  std::vector<JobId> fenced;
  {
    std::lock_guard lock(jobs_mutex_);
    if (fenced_for_ == heard) return;  // this silence's fence has struck
    fenced_for_ = heard;
    for (const auto& [id, job] : jobs_) {
      if (!job->launch.spec().requeue()) continue;
      job->fenced.store(true);
      fenced.push_back(id);
    }
  }
  spdlog::warn(
      "no word from the controller at {} for longer than agent.fence_after ({} s): killing {} "
      "--requeue job(s), which it may start elsewhere; other jobs run on",
      o_.controller, std::chrono::duration_cast<std::chrono::seconds>(o_.fence_after).count(),
      fenced.size());
  for (JobId id : fenced) {
    v1::Kill now;
    now.set_job(id.value());
    kill(now);
  }
}

void Agent::fenced_end(const Job& job, v1::JobEnded& e) const {
  if (!job.fenced.load()) return;
  e.set_reason(v1::REASON_NODE_FAIL);
  e.set_error(fmt::format(
      "its agent heard no controller for agent.fence_after ({} s) and killed it, so that it "
      "could run elsewhere",
      std::chrono::duration_cast<std::chrono::seconds>(o_.fence_after).count()));
}

}  // namespace loom::agent
