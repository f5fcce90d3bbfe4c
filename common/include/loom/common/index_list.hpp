// Lists of indexes as HPC tools write them: "0-3,8,10-11" (Slurm, hwloc, taskset,
// /proc/self/status's Cpus_allowed_list).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom {

// Sorted and without duplicates. Errors quote the input and name the bad element.
Result<std::vector<unsigned>> parse_index_list(std::string_view text);

// The kernel's form (Cpus_allowed_list): consecutive indexes become "a-b". Input need
// not be sorted.
std::string format_index_list(std::span<const unsigned> indexes);

}  // namespace loom
