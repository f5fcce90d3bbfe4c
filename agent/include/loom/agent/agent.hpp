// loomd's agent: registers its node with the controller over one stream, runs each job it
// is sent as tasks (own cgroup, bound as placed, as the user, watched by a keeper) and
// reports when a job's processes on this node have all ended.
//
// Jobs outlive the agent: each job is recorded in the state directory, so that an agent
// that restarts (crashed, upgraded, or stopped with SIGTERM) adopts its tasks again, and a
// job's end is kept until the controller acknowledges it (Forget). When the stream breaks
// the agent reconnects and tells the controller what it still runs and what ended meanwhile.
//
// Threads, all joined by run() before it returns: the stream reader (run's caller), the
// heartbeat sender, the killer (SIGKILLs due after kill grace periods; a stream that has
// gone silent; the fence of --requeue jobs after agent.fence_after), the exit watcher
// (every task's keeper, by pidfd), and two bounded pools for blocking work: one for jobs
// that copy files (the stager takes one copy at a time anyway), one for the rest.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "loom/agent/cgroup.hpp"
#include "loom/agent/exit_watcher.hpp"
#include "loom/agent/job_record.hpp"
#include "loom/agent/task.hpp"
#include "loom/agent/work_pool.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/common/config.hpp"
#include "loom/common/ids.hpp"
#include "loom/hwtopo/binding.hpp"
#include "loom/launch/plan.hpp"
#include "loom/proto/agent.pb.h"
#include "loom/proto/types.pb.h"

namespace loom::agent {

class ControllerLink;
class StagerPool;
class KeptSlices;

struct AgentOptions {
  std::string controller;  // HOST:PORT
  std::string tls_ca;      // tls.ca's path, which loom-rsh reads in MPI jobs
  std::string name;        // the node's
  std::string cgroup;      // this agent's level under loom/
  std::filesystem::path state_dir;
  std::filesystem::path shm_dir;  // MPI jobs' shared-memory directories
  bool allow_root = false;
  std::uint64_t pids_max = 0;  // agent.pids_max
  std::uint64_t swap = 0;      // agent.swap
  std::chrono::milliseconds heartbeat{1000};
  // No word from the controller this long: the stream is made again (the heartbeat
  // window); --requeue jobs are killed (agent.fence_after).
  std::chrono::milliseconds silent_after{30'000};
  std::chrono::milliseconds fence_after{120'000};
  std::filesystem::path keeper;        // loom-keeper
  std::filesystem::path launcher_dir;  // loom-rank and loom-rsh
  std::vector<Config::NvmeDevice> nvme;
  std::string data_address;  // a storage agent's Storage service; empty on a compute node
  burstbuffer::DataPlaneOptions data_plane;
  std::size_t workers = 4;  // the pool for jobs that copy no files
};

class Agent {
 public:
  static Result<std::unique_ptr<Agent>> make(AgentOptions options, hwtopo::Binder binder,
                                             CgroupTree cgroups, JobRecords records);
  ~Agent();

  // Adopts what the state directory says an agent before this one left running, then
  // serves the controller until stop(), reconnecting whenever the stream breaks. Returns
  // the exit status: 1 when the controller refuses this agent. Every thread is joined
  // before it returns, and the jobs' tasks left running under their keepers.
  int run(const std::string& topology_json);
  // An orderly stop (SIGTERM, SIGINT): the agent leaves, its jobs keep running under their
  // keepers for the next agent to adopt. Any thread may call it.
  void stop();

 private:
  struct Job;
  Agent(AgentOptions options, hwtopo::Binder binder, CgroupTree cgroups, JobRecords records,
        std::unique_ptr<ExitWatcher> watcher);

  // agent.cpp: the stream and the threads.
  v1::FromAgent hello(const std::string& topology_json);
  void command(const v1::ToAgent& command);
  std::vector<v1::FromAgent> started_jobs();
  void send_heartbeats();
  // The killer thread: SIGKILLs due, a silent stream dropped, the fence.
  void keep_deadlines();
  // Kills the --requeue jobs: the controller, which has not been heard from, may start
  // them elsewhere.
  void fence();
  // A fenced job's end says so.
  void fenced_end(const Job& job, v1::JobEnded& e) const;
  void leave();
  // agent_recovery.cpp
  void recover();
  void sweep_orphans();
  // agent_launch.cpp
  std::shared_ptr<Job> make_job(const v1::Launch& launch);
  void launch(const v1::Launch& launch);
  bool start(const std::shared_ptr<Job>& job);
  TaskSpec task_spec(JobId job, const launch::TaskPlan& plan) const;
  void exec(const v1::Exec& exec);
  void buffer(const v1::BufferCommand& command);
  // agent_end.cpp
  WorkPool& lane(const Job& job);
  void watch(const std::shared_ptr<Job>& job);
  void rank_exited(Job& job, std::size_t index);
  static void end_ranks(Job& job);
  void complete(const std::shared_ptr<Job>& job);
  void stage_out(const std::shared_ptr<Job>& job, v1::JobEnded e);
  void abandon(Job& job, v1::Reason reason, const std::string& error);
  void end_killed(Job& job);
  void finish(JobId id, const v1::JobEnded& e);
  void forget(JobId id);
  void kill(const v1::Kill& kill);
  void save(const JobRecord& record) const;
  void send_staging(const Job& job, bool out = false);

  AgentOptions o_;
  JobRecords records_;  // in o_.state_dir
  hwtopo::Binder binder_;
  const CgroupTree cgroups_;
  std::shared_ptr<StagerPool> stagers_;
  std::shared_ptr<const KeptSlices> kept_;  // preempted jobs' slices, on o_.nvme's devices
  std::unique_ptr<ControllerLink> link_;
  std::atomic<bool> stopped_{false};
  std::mutex jobs_mutex_;                       // guards jobs_, ended_ and kill_at_
  std::map<JobId, std::shared_ptr<Job>> jobs_;  // running here
  std::map<JobId, v1::JobEnded> ended_;         // ended here, not yet acknowledged
  std::multimap<std::chrono::steady_clock::time_point, JobId> kill_at_;  // SIGKILLs due
  // The last word from the controller before the fence last struck: it strikes once per
  // silence.
  std::chrono::steady_clock::time_point fenced_for_{};
  std::condition_variable_any wake_;  // stop, a kill due, a heartbeat due, a reconnection
  // Last: the threads that use what is above go before it does.
  std::unique_ptr<ExitWatcher> watcher_;
  WorkPool copies_{1};
  WorkPool work_;
};

}  // namespace loom::agent
