// Binding a process to cores and its memory to a NUMA domain, on this machine or
// through the explicit mapping of a simulated node onto it.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/hwtopo/topology.hpp"

namespace loom::hwtopo {

// Where a process is pinned, twice: as placed, in the node's scheduling topology, and as
// applied, on this machine's PUs and domains. The two differ only on a simulated node,
// and whoever reports a binding reports both.
struct Binding {
  std::vector<unsigned> cores;           // placed: logical core indexes
  std::vector<unsigned> pus;             // placed: OS indexes of those cores' PUs
  std::optional<unsigned> numa;          // placed: OS index of the memory domain
  std::vector<unsigned> applied_pus;     // applied: this machine's PU OS indexes
  std::optional<unsigned> applied_numa;  // applied: this machine's domain OS index
  bool simulated = false;

  // "cores 0-3 (PUs 0-3,16-19) memory on NUMA 1", plus " -> applied PUs 0,1 memory on
  // NUMA 0" on a simulated node.
  std::string describe() const;
};

// Resolves placements against a node's topology and applies them to the calling process.
// Holds the live hwloc topology; immutable after construction, so one Binder may be
// shared by threads.
class Binder {
 public:
  // Placements refer to this machine: placed and applied sets are the same.
  static Result<Binder> for_live_machine();

  // Placements refer to `placed`, a synthetic or XML topology that may be larger than
  // this machine (how one machine plays a cluster). They are applied through an explicit
  // mapping, logged when the Binder is made: the placed PU with OS index k binds to this
  // machine's (k mod P)-th usable PU, and placed domain n to its (n mod D)-th domain, in
  // ascending OS index, where P and D are this machine's counts.
  static Result<Binder> for_simulated(Topology placed);

  Binder(Binder&&) noexcept;
  Binder& operator=(Binder&&) noexcept;
  ~Binder();

  const Topology& placed() const;
  const Topology& machine() const;
  bool simulated() const;
  // One line for logs and reports: what maps onto what.
  std::string describe_mapping() const;

  // Checks cores (logical indexes) and the domain (OS index) against the placed topology
  // and computes the sets to apply. A core or domain that does not exist is refused with
  // the ones that do.
  Result<Binding> resolve(std::span<const unsigned> cores, std::optional<unsigned> numa) const;

  // Binds the calling thread's CPUs, and its memory with MPOL_BIND, then reads both back
  // from the kernel and fails unless they are what was asked: apply_binding.hpp, as jobs'
  // tasks and ranks are bound. Meant for a child between fork and exec, while the process
  // has one thread: the binding is inherited by what it execs.
  Status apply(const Binding& binding) const;

 private:
  struct State;
  explicit Binder(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace loom::hwtopo
