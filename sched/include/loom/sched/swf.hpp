// The Standard Workload Format (Parallel Workloads Archive): 18 whitespace-separated
// fields per job, ';' starting header and comment lines, -1 for unknown.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::sched {

struct SwfJob {
  std::uint64_t id = 0;              // field 1
  std::int64_t submit = 0;           // field 2, seconds
  std::int64_t run = -1;             // field 4, seconds
  std::int64_t allocated = -1;       // field 5, processors
  std::int64_t requested = -1;       // field 8, processors
  std::int64_t requested_time = -1;  // field 9, seconds
  std::size_t line = 0;
};

struct SwfTrace {
  std::optional<std::int64_t> max_procs;  // header MaxProcs
  std::optional<std::int64_t> max_nodes;  // header MaxNodes
  std::vector<SwfJob> jobs;               // in file order
};

// Parses a whole trace; a malformed line is an error naming its number: "trace.swf:12: ...".
Result<SwfTrace> parse_swf(std::string_view text, std::string_view source);

}  // namespace loom::sched
