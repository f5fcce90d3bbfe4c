// A Describe reply, as the stager takes it: the plan of a skeleton, checked against what the
// stager knows of the file. Where the file says its data lies is the user's to write.
#pragma once

#include <cstdint>

#include "loom/burstbuffer/skeleton_plan.hpp"
#include "loom/common/error.hpp"
#include "loom/proto/storage.pb.h"

namespace loom::burstbuffer {

// The plan `described` gives, or why it is refused: an extent past the file's end
// (`file_size`: a size of 2^60 once made the stager allocate a range for every 4 MiB of it),
// a chunk larger than a staging buffer (`range`). Errors name the dataset; the caller the file.
Result<SkeletonPlan> plan_of(const v1::DescribeReply& described, std::uint64_t file_size,
                             std::size_t range);

// Whether `placed` (where the skeleton's owner placed each dataset's raw data: its answer
// is theirs to write) has the datasets, chunks and sizes of `plan`, in order.
Status same_shape(const SkeletonPlan& plan, const SkeletonPlan& placed);

// The bytes the plan moves: the datasets' extents, not the skeleton.
std::uint64_t bytes_of(const SkeletonPlan& plan);

}  // namespace loom::burstbuffer
