// A Topology as JSON: how agents register and how `loom topo --json` prints it.
// to_json followed by topology_from_json gives back an equal Topology.
#pragma once

#include <nlohmann/json.hpp>

#include "loom/common/error.hpp"
#include "loom/hwtopo/topology.hpp"

namespace loom::hwtopo {

nlohmann::json to_json(const Topology& topology);

// Validates as it reads, since the JSON comes over the wire: a missing or mistyped
// field, or a core whose domain does not exist, is an error that names it.
Result<Topology> topology_from_json(const nlohmann::json& json);

}  // namespace loom::hwtopo
