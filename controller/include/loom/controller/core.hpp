// The controller's core: the job manager, the cluster and the agents as the controller
// knows them, changed only by events — a CLI call, an agent's hello, message or leaving, a
// tick — run one at a time on one thread (the daemon's inbox, controller/daemon/inbox.hpp).
// It does no I/O of its own: what it sends an agent goes to that agent's queue
// (AgentChannel), and it reads the time from a Clock, so its tests run it on a fake clock,
// with no process and no sleep.
//
// Its public methods are the controller's events, one each, and so more than the usual
// fifteen; reads that change nothing go to jobs() directly.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "loom/common/config.hpp"
#include "loom/controller/job_manager.hpp"
#include "loom/proto/agent.pb.h"
#include "loom/proto/controller.pb.h"
#include "loom/proto/types.pb.h"

namespace loom::controller {

// Where the core reads the time: the wall clock for the jobs' times (walltimes, what is
// stored), a steady one for heartbeats and windows.
class Clock {
 public:
  using Steady = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual sched::Time wall() const = 0;
  virtual Steady steady() const = 0;
};

class SystemClock final : public Clock {
 public:
  sched::Time wall() const override;
  Steady steady() const override;
};

// A clock its owner moves: the core on simulated time, in its tests and benchmarks.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(sched::Time wall) : wall_(wall) {}
  sched::Time wall() const override { return wall_; }
  Steady steady() const override { return steady_; }
  void advance(std::chrono::seconds by) {
    wall_ += by;
    steady_ += by;
  }

 private:
  sched::Time wall_;
  Steady steady_{};
};

// One agent's stream as the core sees it. send() only queues (the daemon's AgentStream has
// a writer thread of its own); drop() ends the stream, after which the agent's leaving
// comes as an event.
class AgentChannel {
 public:
  virtual ~AgentChannel() = default;
  virtual void send(const v1::ToAgent& message) = 0;
  virtual void drop() = 0;
};

class Core {
 public:
  // Jobs the manager found running wait, for controller.requeue_after from now, for their
  // agents to re-register. `changed` runs when something a waiting call looks at changed:
  // an Open MPI daemon's end, a buffer's answer (the manager's own observer covers jobs).
  Core(sched::Cluster& cluster, const Config& config, const Clock& clock,
       std::unique_ptr<JobManager> manager, std::function<void()> changed = {});

  // Reads, and the changes that send nothing.
  JobManager& jobs() { return *manager_; }
  // Prometheus' text for /metrics: the job manager's numbers and each agent's silence.
  std::string metrics() const;
  const sched::Cluster& cluster() const { return cluster_; }

  // ---- The CLI ----
  Result<std::vector<JobId>> submit(const Caller& who, const v1::SubmitRequest& request);
  Status cancel(const Caller& who, JobId id, std::optional<std::uint32_t> index);
  Status drain(const Caller& who, const std::string& node, const std::string& reason);
  Status resume(const Caller& who, const std::string& node);
  v1::NodesReply nodes() const;
  // Stores the buffer and has its node make it; the answer comes as buffer_made().
  Result<BufferRow> create_buffer(const Caller& who, const v1::BufferRequest& request);
  // The node's answer to the buffer's making, taken: empty when it was made, else why not;
  // nullopt while none came.
  std::optional<std::string> buffer_made(const BufferRow& row);
  // A buffer of the caller's that could not be made is forgotten.
  void drop_buffer(const Caller& who, const BufferRow& row);
  // The request's buffer: its name, and its owner when an admin names one.
  Result<BufferRow> destroy_buffer(const Caller& who, const v1::BufferRequest& request);
  v1::BufferInfo buffer_info(const BufferRow& row) const;

  // ---- loom-rsh: Open MPI's daemon on a job's node ----
  // Starts it (the node is returned), or nullopt while the job stages in (ask again once
  // something changed), or why it may not.
  Result<std::optional<NodeId>> start_daemon(const Caller& who, JobId id, const std::string& node,
                                             const v1::ExecRequest& request);
  // The daemon's end, taken; nullopt while it runs; an error once the job ended on the
  // node without it.
  Result<std::optional<v1::JobEnded>> daemon_end(JobId id, NodeId node);
  // loom-rsh went away: the daemon is killed and its end kept for no one.
  void abandon_daemon(JobId id, NodeId node);

  // ---- Agents ----
  // A compute agent's hello (its credential already checked): the node it is, registered
  // and reconciled with what it reports.
  Result<NodeId> agent_joined(const v1::RegisterRequest& hello,
                              std::shared_ptr<AgentChannel> channel);
  void agent_message(NodeId node, const v1::FromAgent& message);
  // The stream `channel` ended (a newer registration may have replaced it already).
  void agent_left(NodeId node, const AgentChannel* channel);
  // A storage agent: it runs no jobs; it is known by name, with its data address, while
  // its stream lasts.
  Status storage_joined(const v1::RegisterRequest& hello);
  void storage_left(const v1::RegisterRequest& hello);

  // ---- Group commit ----
  // The events between begin() and commit() are stored as one transaction at commit();
  // what they send the agents is held until then, and goes out once it is stored (a
  // launch, a kill, a Forget are acted on only once what they follow is on disk). Outside
  // a batch every change is stored as it is made and sent at once. An error from commit()
  // means nothing of the batch is stored and nothing of it was sent: the controller must
  // stop without answering any of it.
  Status begin();
  Status commit();

  // ---- The state's disk ----
  // Why the state cannot be written, while it cannot; nullopt when it can. The core starts
  // so when its store fails a probe (a full disk, an I/O error): it then answers reads,
  // refuses every change, runs no pass, and hears known nodes' agents without taking what
  // they report (their heartbeats are answered, so that they do not fence their jobs),
  // until a tick's probe succeeds; their streams are then dropped, and they register again
  // in full. (A write that fails later stops the controller instead: what it holds is then
  // ahead of the store, and the next start probes.)
  const std::optional<std::string>& read_only() const { return read_only_; }

  // ---- Time ----
  // Silent and lost nodes, the recovery window, walltimes, then a scheduling pass; while
  // read-only, a probe of the store instead. An error when the pass could not be stored:
  // the controller must stop.
  Status tick();
  // Whether an event since the last tick asks for a pass now (a submission, an end, a
  // node joining), and how long a tick may wait otherwise.
  bool wants_pass() const { return wants_pass_; }
  std::chrono::milliseconds tick_interval() const;

 private:
  struct Agent {
    std::shared_ptr<AgentChannel> channel;
    Clock::Steady heard;  // its last message
  };
  struct RunningJob {
    std::set<NodeId> pending;  // nodes whose processes have not ended yet
    std::set<NodeId> nodes;    // all of them: each is told to Forget the job once its end is stored
    std::set<NodeId>
        started;  // nodes whose ranks have started (a job staging in runs once all have)
    std::set<NodeId> daemons;  // nodes where Open MPI's daemon was started (Exec)
    bool failed = false;
    Ending ending;
  };

  // A known node's agent while read-only: heard, not reconciled.
  Result<NodeId> joined_read_only(const v1::RegisterRequest& hello,
                                  std::shared_ptr<AgentChannel> channel);
  // What a (re-)registering agent holds: jobs running, ends not acknowledged.
  void reconcile(NodeId node, const v1::RegisterRequest& hello);
  // Unknown jobs that every node has now reported are adopted.
  void adopt_ready();
  // Nodes silent or gone past the window fail their jobs; after the recovery window,
  // jobs still unknown are lost.
  void check_nodes();
  void lose(JobId id, const std::string& node_failure);  // ends it NODE_FAIL, or requeues it
  void forget(JobId id, const std::set<NodeId>& nodes);
  void send(NodeId node, const v1::ToAgent& message);
  void send_launch(const Launch& launch);
  // SIGTERM, then SIGKILL after `grace`, on the job's nodes; with keep_slice its slices stay
  // (a preempted job, requeued).
  void send_kill(JobId id, std::chrono::seconds grace, bool keep_slice = false);
  // Kills a preempted job; one requeued keeps its slices on its nodes for its next start.
  void preempt(const sched::Preemption& preemption);
  // Has the nodes remove the kept slices of jobs that will not start on them again.
  void drop_kept();
  // Has the buffer's node make (or destroy) it.
  void send_buffer(const BufferRow& row, bool destroy);
  void node_started(NodeId node, const v1::JobStarted& started);
  // A node reports the job's processes there gone; the job ends when every node has.
  void node_ended(NodeId node, const v1::JobEnded& ended);
  // An MPI job over several nodes: its first node, where mpirun runs and whose status is
  // the job's (the first failing rank's, as mpirun reports it).
  std::optional<NodeId> mpirun_node(JobId id) const;
  // Whether `node` may start Open MPI's daemon for the job now (see start_daemon).
  Result<std::optional<NodeId>> daemon_node(const Caller& who, JobId id,
                                            const std::string& node) const;
  void notify() const {
    if (changed_) changed_();
  }
  // kUnavailable, saying why, while read-only.
  Status writable() const;
  // Probes the store; read-only with the reason when it fails.
  void probe_store();

  sched::Cluster& cluster_;
  const Config& config_;
  const Clock& clock_;
  std::unique_ptr<JobManager> manager_;
  std::function<void()> changed_;
  std::map<NodeId, Agent> agents_;
  std::map<NodeId, Clock::Steady> gone_;           // nodes whose agent left, and since when
  std::map<std::string, std::string> storage_;     // storage agents connected: name -> data address
  std::map<std::string, v1::CgroupInfo> cgroups_;  // how each agent last said it confines jobs
  // Answers to buffers being made: slice -> error ("" made).
  std::map<std::string, std::string> buffers_made_;
  std::map<JobId, RunningJob> running_;
  // Preempted jobs' slices kept on their nodes: until the job starts again (those of nodes
  // it does not start on go), or ends. Not stored: a restarted controller has the agents
  // drop the slices they kept, which it cannot tell from an older run's.
  std::map<JobId, std::set<NodeId>> kept_;
  // Starts and ends reported for unknown jobs, kept until they are adopted; and the nodes
  // whose agents did not know an unknown job at all (its launch never reached them).
  std::map<JobId, std::set<NodeId>> early_starts_;
  std::map<JobId, std::map<NodeId, v1::JobEnded>> early_ends_;
  std::map<JobId, std::set<NodeId>> never_launched_;
  std::map<std::pair<JobId, NodeId>, v1::JobEnded> daemon_ends_;  // for daemon_end()
  // What a batch sends, held until it is stored.
  std::vector<std::pair<std::shared_ptr<AgentChannel>, v1::ToAgent>> held_;
  bool batch_ = false;
  bool stored_batch_ = false;  // whether the batch is a store transaction (not read-only)
  const std::chrono::steady_clock::duration window_;  // heartbeat_interval x heartbeat_misses
  const std::chrono::seconds requeue_after_;          // controller.requeue_after
  // Since when agents may register: the start, or the end of read-only. Agents are given
  // the heartbeat window from it, and unknown jobs requeue_after.
  Clock::Steady started_;
  std::optional<std::string> read_only_;
  // Whether a pass must wait: for the heartbeat window after a restart, while agents
  // re-register, and after it while a job of unknown state has been reported by some of
  // its nodes but not all (its cores there are not held yet).
  bool holds_passes() const;
  bool wants_pass_ = true;
};

}  // namespace loom::controller
