// An agent's stream to the controller's core, for the benchmarks of the core alone: it
// keeps the jobs it was sent to launch, for the benchmark to answer as an agent would.
#pragma once

#include <cstdint>
#include <vector>

#include "loom/controller/core.hpp"

namespace loom::bench {

class LaunchChannel final : public controller::AgentChannel {
 public:
  void send(const v1::ToAgent& message) override {
    if (message.has_launch()) launched.push_back(message.launch().job());
  }
  void drop() override {}
  std::vector<std::uint64_t> launched;
};

}  // namespace loom::bench
