// Staging HDF5 datasets as stored. The storage agent writes a skeleton: a small HDF5 file
// holding the datasets asked for, with their groups, datatypes, dataspaces, creation
// properties (chunking, filters, fill values) and attributes, but none of their raw data;
// and it lists where that raw data lies in the source file: one extent for a contiguous
// dataset (H5Dget_offset), one per allocated chunk for a chunked one (walking the chunk
// grid with H5Dget_chunk_info_by_coord: 1.10.8 has no H5Dchunk_iter, and
// H5Dget_chunk_info by index walks the index on every call). The stager fetches the
// skeleton as a file, then moves the extents over the fabric and writes them as they are:
// contiguous bytes with pwrite at the destination's own offset, chunks with H5Dwrite_chunk
// (compressed chunks stay compressed). What is not raw bytes at a fixed place (variable-
// length data in the global heap, compact data in the object header), and contiguous
// datasets of 64 KiB or less, are copied whole into the skeleton through HDF5, and counted
// apart.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::burstbuffer {

struct ChunkExtent {
  std::vector<std::uint64_t> coords;  // the chunk's first element, per dimension
  std::uint32_t filter_mask = 0;      // filters skipped for this chunk (H5Dwrite_chunk's)
  std::uint64_t address = 0;          // in the source file
  std::uint64_t size = 0;             // bytes as stored (compressed when filtered)
};

struct DatasetPlan {
  enum class Kind { kContiguous, kChunked, kCopied };
  std::string path;  // "/group/dset"
  Kind kind = Kind::kCopied;
  std::uint64_t address = 0, size = 0;  // contiguous: where its bytes lie in the source
  std::vector<ChunkExtent> chunks;      // chunked: the allocated chunks
};

struct SkeletonPlan {
  std::vector<DatasetPlan> datasets;
  std::vector<std::string> notes;  // what could not be carried (attributes referencing objects)
  std::uint64_t copied_bytes = 0;  // data copied through HDF5 into the skeleton
};

// The storage side: reads `source` (an HDF5 file, opened by path) and writes the skeleton of
// `datasets` into `skeleton_fd` (empty, writable). The skeleton is built in memory (HDF5's
// core driver) and written whole: it holds the user's data, and no file of its own ever
// exists. Errors name the dataset: a missing one, one whose type cannot be staged (object
// or region references).
Result<SkeletonPlan> write_skeleton(const std::filesystem::path& source,
                                    std::span<const std::string> datasets, int skeleton_fd);

// The stager's side: a fetched skeleton opened for its raw data to be written in.
class Hdf5Destination {
 public:
  // Opens the skeleton read-write and allocates each contiguous dataset's storage, so that
  // its bytes can be written where the file says.
  static Result<std::unique_ptr<Hdf5Destination>> open(const std::filesystem::path& skeleton,
                                                       const SkeletonPlan& plan);
  ~Hdf5Destination();

  // A contiguous dataset's offset in the destination file.
  std::uint64_t offset(std::size_t dataset) const;
  // Writes a chunk as stored (thread-safe: HDF5's lock).
  Status write_chunk(std::size_t dataset, const ChunkExtent& chunk, const std::byte* data);
  // Flushes and closes the file: metadata written.
  Status close();

 private:
  struct State;
  explicit Hdf5Destination(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace loom::burstbuffer
