// A job's spec as a client sent it: what it may carry at most (job_spec.cpp); to_sched_spec
// (job_manager.hpp) reads it as the scheduler takes it.
#pragma once

#include "loom/common/error.hpp"
#include "loom/proto/types.pb.h"

namespace loom::controller {

// Refuses a spec over the bounds, naming the field.
Status check_bounds(const v1::JobSpec& spec);

}  // namespace loom::controller
