// What Open MPI needs to start a job on a Loom allocation: its hosts with their slots in
// the placement's node order (`--host`, Open MPI filling node 0's slots first, as Loom
// numbers ranks), the mpirun command line, and each rank's binding, handed to the ranks in the
// environment so that `loom-rank` applies it before exec. Binding is Loom's: mpirun binds nothing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::launch {

// One rank where it runs: this machine's PUs (OS indexes, after hwtopo's explicit mapping
// on a simulated node) and the NUMA node its memory is bound to.
struct RankBinding {
  unsigned rank = 0;
  std::vector<unsigned> pus;
  std::optional<unsigned> numa;
  friend bool operator==(const RankBinding&, const RankBinding&) = default;
};

struct NodeRanks {
  std::string node;    // its hostname, as Open MPI resolves it
  unsigned ranks = 0;  // slots
};

struct MpiPlan {
  std::vector<NodeRanks> nodes;   // in rank order
  std::string rank_wrapper;       // loom-rank
  std::string rsh_agent;          // loom-rsh; "" on one node (no daemon to start elsewhere)
  std::string network;            // oob/btl tcp interfaces ("" : Open MPI's choice)
  std::vector<std::string> argv;  // the application
};

// "node0:4,node1:4": mpirun's --host.
std::string hosts(const std::vector<NodeRanks>& nodes);

// mpirun -np N --host HOSTS --map-by slot --bind-to none [--mca plm_rsh_agent loom-rsh
// --mca plm_rsh_no_tree_spawn 1] [--mca oob_tcp_if_include I --mca btl_tcp_if_include I]
// loom-rank APP ARGS. Nothing is forwarded with -x: Loom's variables differ per node (the
// slice, the staged files, the bindings), and each node's ranks inherit them from the
// process its agent started there (mpirun on the first node, orted on the others).
std::vector<std::string> mpirun_argv(const MpiPlan& plan);

// The words of a command line as a POSIX shell splits them: blanks separate, '...' and
// "..." quote (a backslash escapes within "..." and outside quotes). Open MPI hands its
// rsh agent the daemon's command with values quoted for the remote shell; Loom runs no
// shell, so it splits them itself. Unclosed quotes are an error.
Result<std::vector<std::string>> split_command(std::string_view line);

// The only command loom-rsh runs: Open MPI's daemon. `words` must start with "orted"
// (nothing before it: no variable assignments, no path); its arguments follow, without
// "--daemonize", since the daemon must stay the process its agent waits for.
Result<std::vector<std::string>> daemon_arguments(const std::vector<std::string>& words);

// LOOM_RANK_BINDING: "0=0,1@0;1=2,3@1" (rank=PUs@NUMA; "@" alone: no memory binding).
std::string encode_bindings(const std::vector<RankBinding>& ranks);
Result<std::vector<RankBinding>> decode_bindings(std::string_view text);

// LOOM_NODELIST: the job's nodes, comma-separated, in rank order.
std::string nodelist(const std::vector<NodeRanks>& nodes);

}  // namespace loom::launch
