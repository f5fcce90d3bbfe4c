// What an MPI job's first node asks of the machine before mpirun runs: that the job's
// other nodes resolve, and which network the job's ranks talk over.
#pragma once

#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/launch/mpi.hpp"

namespace loom::launch {

// Open MPI finds the job's other nodes by name: each of nodes[1..] must resolve here. A
// temporary failure is tried again a few times, as a resolver would.
Status check_resolvable(const std::vector<NodeRanks>& nodes);

// The IPv4 network of an interface, "198.18.0.16/28", for Open MPI's oob and btl tcp
// traffic: the job's ranks talk over the network the data plane uses. "" when there is
// none (Open MPI chooses).
std::string interface_network(const std::string& name);

}  // namespace loom::launch
