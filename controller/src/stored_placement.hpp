// How a job's placement is stored: the JSON that every schema has kept in the `placement`
// column, so that a state written by an earlier Loom opens unchanged and an administrator
// can read it with sqlite3's json functions. Only the store converts; everything else
// holds a loom.v1.Placement.
#pragma once

#include <string>
#include <string_view>

#include "loom/common/error.hpp"
#include "loom/proto/types.pb.h"

namespace loom::controller::detail {

std::string placement_to_json(const v1::Placement& placement);

// An empty text is an empty placement (a job never placed, or requeued).
Result<v1::Placement> placement_from_json(std::string_view text);

}  // namespace loom::controller::detail
