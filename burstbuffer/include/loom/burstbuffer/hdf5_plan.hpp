// Staging HDF5 datasets as stored. The storage agent writes a skeleton: a small HDF5 file
// holding the datasets asked for, with their groups, datatypes, dataspaces, creation
// properties (chunking, filters, fill values) and attributes, but none of their raw data;
// and it lists where that raw data lies in the source file: one extent for a contiguous
// dataset (H5Dget_offset), one per allocated chunk for a chunked one (walking the chunk
// grid with H5Dget_chunk_info_by_coord: 1.10.8 has no H5Dchunk_iter, and
// H5Dget_chunk_info by index walks the index on every call). The stager fetches the
// skeleton as a file and has its raw data placed in it (place_raw_data: each contiguous
// block and each chunk allocated and indexed, none of its bytes written), then moves the
// extents over the fabric and writes them with pwrite where they were placed (compressed
// chunks stay compressed). What is not raw bytes at a fixed place (variable-length data in
// the global heap, compact data in the object header), and contiguous datasets of 64 KiB
// or less, are copied whole into the skeleton through HDF5, and counted apart.
//
// Both functions parse files a user made, so neither runs in a daemon: loom-h5skeleton runs
// them as the user (src/skeleton_reader.hpp).
#pragma once

#include <filesystem>
#include <span>
#include <string>

#include "loom/burstbuffer/skeleton_plan.hpp"
#include "loom/common/error.hpp"

namespace loom::burstbuffer {

// The storage side: reads `source` (an HDF5 file, opened by path) and writes the skeleton of
// `datasets` into `skeleton_fd` (empty, writable). The skeleton is built in memory (HDF5's
// core driver) and written whole: it holds the user's data, and no file of its own ever
// exists. Errors name the dataset: a missing one, one whose type cannot be staged (object
// or region references).
Result<SkeletonPlan> write_skeleton(const std::filesystem::path& source,
                                    std::span<const std::string> datasets, int skeleton_fd);

// The stager's side: allocates in the fetched `skeleton` (by path) each contiguous dataset's
// block and each chunk of `plan`, and returns the plan with every address where that raw
// data goes in the skeleton. HDF5 writes the skeleton's metadata only: no byte of raw data
// is written (not even zeros: the file is sparse there), so the stager's own writes of the
// source's bytes are the only ones.
Result<SkeletonPlan> place_raw_data(const std::filesystem::path& skeleton,
                                    const SkeletonPlan& plan);

}  // namespace loom::burstbuffer
