// What a job's state says about it, for the job manager's files.
#pragma once

#include "loom/proto/types.pb.h"

namespace loom::controller {

inline bool ended(v1::JobState state) { return state >= v1::COMPLETED; }
// Holding its allocation: staging in, running, or staging out.
inline bool active(v1::JobState state) {
  return state == v1::STAGING_IN || state == v1::RUNNING || state == v1::STAGING_OUT;
}

}  // namespace loom::controller
