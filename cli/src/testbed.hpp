// A cluster's network on one machine, for `loom up --netns`: each host a network namespace
// with a veth on a bridge and an address in 198.18.0.0/24 (RFC 2544's benchmarking range),
// and its own hostname and /etc/hosts naming every host. Names are unique per run: a
// namespace, or a hosts file bound over /etc/hosts, never has the name of one an earlier
// run removed. With names reused, back-to-back runs here (gVisor) saw an agent's bound
// /etc/hosts revert to the machine's about once in 20 runs; in 63 runs since, never. The bridge
// holds the head node's address, in this namespace: loomctld listens there and users' commands
// reach it. No host has a route beyond the bridge.
//
// Each testbed takes one /28 of the range (16 side by side, 13 hosts each), claimed by
// creating its bridge, loom-br<K>, which fails when another run holds it. A testbed whose
// owner died without tearing it down (SIGKILL) is removed by the next run that finds it.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::cli {

class Testbed {
 public:
  // Root only. The hosts' names, unique; at most 13.
  static Result<Testbed> make(const std::vector<std::string>& hosts);
  Testbed(Testbed&& other) noexcept;
  Testbed& operator=(Testbed&&) = delete;
  ~Testbed();  // removes the namespaces, the bridge and the hosts files

  const std::string& head_address() const { return head_; }
  std::string address(const std::string& host) const;
  // "198.18.0.16/28"
  std::string network() const;
  // The hosts' network namespaces are this and the host's name: "loom1-4242-node0".
  std::string namespace_prefix() const;
  // The interface every host has on the bridge.
  static constexpr const char* kInterface = "eth0";
  // The command line that runs `argv` on `host`: in its network namespace, with its own
  // hostname and /etc/hosts (private UTS and mount namespaces), and with the same pid.
  std::vector<std::string> on(const std::string& host, const std::vector<std::string>& argv) const;

 private:
  Testbed(unsigned slot, std::vector<std::string> hosts);
  std::string namespace_of(const std::string& host) const;
  void tear_down();

  unsigned slot_ = 0;  // which /28
  pid_t run_ = 0;      // the owner's pid, in the namespaces' names: no two runs share a name
  std::vector<std::string> hosts_;
  std::string head_;
  bool owner_ = false;
};

}  // namespace loom::cli
