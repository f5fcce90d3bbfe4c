// The plan of an HDF5 skeleton (hdf5_plan.hpp): which datasets it holds and where each one's
// raw data lies, as types and as the loom.v1 message that carries it between processes
// (the storage agent's Describe reply, and loom-h5skeleton's answers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loom/proto/storage.pb.h"

namespace loom::burstbuffer {

struct ChunkExtent {
  std::vector<std::uint64_t> coords;  // the chunk's first element, per dimension
  std::uint32_t filter_mask = 0;      // filters skipped for this chunk (H5Dwrite_chunk's)
  std::uint64_t address = 0;          // where its bytes lie in the file the plan describes
  std::uint64_t size = 0;             // bytes as stored (compressed when filtered)
};

struct DatasetPlan {
  enum class Kind { kContiguous, kChunked, kCopied };
  std::string path;  // "/group/dset"
  Kind kind = Kind::kCopied;
  std::uint64_t address = 0, size = 0;  // contiguous: where its bytes lie
  std::vector<ChunkExtent> chunks;      // chunked: the allocated chunks
};

struct SkeletonPlan {
  std::vector<DatasetPlan> datasets;
  std::vector<std::string> notes;  // what could not be carried (attributes referencing objects)
  std::uint64_t copied_bytes = 0;  // data copied through HDF5 into the skeleton
};

// As the message carries it (a DescribeReply without its handle and size), and back, as it
// is: what a message says is checked by whoever acts on it.
v1::DescribeReply to_message(const SkeletonPlan& plan);
SkeletonPlan from_message(const v1::DescribeReply& message);

}  // namespace loom::burstbuffer
