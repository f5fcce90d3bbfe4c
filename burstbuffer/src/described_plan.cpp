#include "described_plan.hpp"

#include <fmt/format.h>

namespace loom::burstbuffer {

namespace {

Status within(const std::string& dataset, std::uint64_t address, std::uint64_t size,
              std::uint64_t file_size) {
  if (address <= file_size && size <= file_size - address) return {};
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("dataset {} says {} bytes of its data lie at byte {}, past the "
                                "file's end ({} bytes)",
                                dataset, size, address, file_size));
}

}  // namespace

Result<SkeletonPlan> plan_of(const v1::DescribeReply& described, std::uint64_t file_size,
                             std::size_t range) {
  for (const v1::DatasetExtents& e : described.datasets()) {
    if (e.kind() == v1::DatasetExtents::CONTIGUOUS)
      LOOM_TRY(within(e.path(), e.address(), e.size(), file_size));
    for (const v1::Chunk& c : e.chunks()) {
      if (c.size() > range) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("dataset {} has a chunk of {} bytes, more than a staging "
                                      "buffer ({})",
                                      e.path(), c.size(), range));
      }
      LOOM_TRY(within(e.path(), c.address(), c.size(), file_size));
    }
  }
  return from_message(described);
}

Status same_shape(const SkeletonPlan& plan, const SkeletonPlan& placed) {
  bool same = placed.datasets.size() == plan.datasets.size();
  for (std::size_t i = 0; same && i < plan.datasets.size(); ++i) {
    const DatasetPlan &p = plan.datasets[i], &q = placed.datasets[i];
    same = q.kind == p.kind && q.size == p.size && q.chunks.size() == p.chunks.size();
    for (std::size_t j = 0; same && j < p.chunks.size(); ++j)
      same = q.chunks[j].size == p.chunks[j].size;
  }
  if (same) return {};
  return make_error(ErrorCode::kInternal,
                    "the skeleton's places for its datasets do not match what was asked");
}

std::uint64_t bytes_of(const SkeletonPlan& plan) {
  std::uint64_t total = 0;
  for (const DatasetPlan& p : plan.datasets) {
    total += p.size;
    for (const ChunkExtent& c : p.chunks) total += c.size;
  }
  return total;
}

}  // namespace loom::burstbuffer
