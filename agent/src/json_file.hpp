// The agent's state files (job records, kept slices' records): JSON, written whole.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "loom/common/error.hpp"

namespace loom::agent {

// Writes `json` to a temporary file beside `target`, root's alone (mode 0600), then renames
// it into place: a crash leaves the old file or the new one. Bytes that are not UTF-8 (a path
// in an error message) are replaced, not thrown on.
Status write_json_file(const std::filesystem::path& target, const nlohmann::json& json);

}  // namespace loom::agent
