// What a job's state says about it, and a job not found, for the job manager's files.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <expected>
#include <optional>

#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/proto/types.pb.h"
#include "loom/sched/scheduler.hpp"

namespace loom::controller {

inline bool ended(v1::JobState state) { return state >= v1::COMPLETED; }
// Holding its allocation: staging in, running, or staging out.
inline bool active(v1::JobState state) {
  return state == v1::STAGING_IN || state == v1::RUNNING || state == v1::STAGING_OUT;
}

// An ended state as the scheduler's dependencies see it.
inline sched::JobEnd end_kind(v1::JobState state) {
  switch (state) {
    case v1::COMPLETED:
      return sched::JobEnd::kCompleted;
    case v1::CANCELLED:
      return sched::JobEnd::kCancelled;
    case v1::TIMEOUT:
      return sched::JobEnd::kTimeout;
    case v1::NODE_FAIL:
      return sched::JobEnd::kNodeFail;
    default:
      return sched::JobEnd::kFailed;
  }
}

// A job, or an array's element, the caller may not see or that does not exist: the same.
inline std::unexpected<Error> not_found(JobId id,
                                        std::optional<std::uint32_t> index = std::nullopt) {
  return make_error(ErrorCode::kNotFound,
                    index ? fmt::format("job {}_{} does not exist", id.value(), *index)
                          : fmt::format("job {} does not exist", id.value()));
}

}  // namespace loom::controller
