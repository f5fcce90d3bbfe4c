// Durations as people write walltimes, parsed in one place.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "loom/common/error.hpp"

namespace loom {

// Parses a walltime, in whole seconds. Slurm's forms, with Slurm's meaning:
//   M   M:S   H:M:S   D-H   D-H:M   D-H:M:S     (a bare number is minutes, as in sbatch -t)
// and a number with a unit: 90s, 90m, 1.5h, 2d.
// Minutes and seconds after the first field must be below 60, hours after a day below 24.
// Errors quote the input.
Result<std::chrono::seconds> parse_duration(std::string_view text);

// Slurm's way of writing it back: "0:05", "1:30:00", "2-00:00:00".
std::string format_duration(std::chrono::seconds duration);

}  // namespace loom
