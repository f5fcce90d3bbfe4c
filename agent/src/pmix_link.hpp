// The agent's side of a job's PMIx server on this node (--mpi=pmix, loom-pmix): it starts
// the server as one of the job's tasks with a channel to it, sends the namespace, takes
// each rank's PMIx environment back, then hears what the server reports of the ranks. It
// decides, as mpirun does, which end of a rank fails the job: a PMIx_Abort, a failing
// status, or an exit after PMIx_Init without PMIx_Finalize. The server runs as the job's
// user, so what it says is checked and bounded, and can fail only its own job.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "loom/agent/task.hpp"
#include "loom/common/error.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/proto/pmix.pb.h"
#include "loom/proto/types.pb.h"

namespace loom::agent {

// What ends an MPI job: the status it ends with here, and, unless a rank merely failed,
// why (reason and detail, for loom show).
struct RankFailure {
  int exit_code = 1;
  std::optional<int> signal;
  v1::Reason reason = v1::REASON_NONE;
  std::string detail;
};

class PmixLink {
 public:
  using Environments = std::map<std::uint32_t, std::map<std::string, std::string>>;

  // Starts the server as `server` says, sends it `job` and waits (30 s at most) for each of
  // the node's ranks' PMIx environment. `node` names this node in what it reports.
  static Result<std::unique_ptr<PmixLink>> start(const CgroupTree& cgroups, TaskSpec server,
                                                 const v1::PmixJob& job, std::string node);
  // A server that an agent before this one started: what it reported went with that agent.
  static std::unique_ptr<PmixLink> adopt(Task server, std::string node);
  PmixLink(const PmixLink&) = delete;
  PmixLink& operator=(const PmixLink&) = delete;
  // Stops listening, and kills the server.
  ~PmixLink();

  const Environments& environments() const { return environments_; }
  const Task& server() const { return server_; }
  // Reads the server's reports on a thread of its own from now on. `failed` is called (on
  // that thread) when a report is the job's first failure: a PMIx_Abort, the server's own,
  // or the server's end before this link's.
  void listen(std::function<void()> failed);
  // A rank's end: true when it is the job's first failure.
  bool rank_ended(std::uint32_t rank, const ExitStatus& status);
  std::optional<RankFailure> failure() const;

 private:
  PmixLink(Task server, UniqueFd channel, std::string node)
      : server_(std::move(server)), channel_(std::move(channel)), node_(std::move(node)) {}
  bool fail(RankFailure failure);  // under mutex_
  void heard(const v1::FromPmix& event, const std::function<void()>& failed);

  Task server_;
  UniqueFd channel_;  // none for an adopted server
  std::string node_;
  Environments environments_;
  mutable std::mutex mutex_;
  std::set<std::uint32_t> connected_, finalized_;
  std::optional<RankFailure> failure_;  // the first
  bool stopping_ = false;               // the channel's end is this link's, not the server's
  std::thread reader_;
};

}  // namespace loom::agent
