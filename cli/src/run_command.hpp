// A tool loom up runs (ip, openssl) to its end.
#pragma once

#include <string>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::cli {

// Runs argv (found on PATH) to its end, its stdout discarded; fails with its stderr when it
// exits non-zero.
Status run_command(const std::vector<std::string>& argv);

}  // namespace loom::cli
