#include "loom/burstbuffer/skeleton_plan.hpp"

namespace loom::burstbuffer {

v1::DescribeReply to_message(const SkeletonPlan& plan) {
  v1::DescribeReply reply;
  reply.set_copied_bytes(plan.copied_bytes);
  for (const std::string& note : plan.notes) reply.add_notes(note);
  for (const DatasetPlan& p : plan.datasets) {
    v1::DatasetExtents* e = reply.add_datasets();
    e->set_path(p.path);
    e->set_kind(p.kind == DatasetPlan::Kind::kContiguous ? v1::DatasetExtents::CONTIGUOUS
                : p.kind == DatasetPlan::Kind::kChunked  ? v1::DatasetExtents::CHUNKED
                                                         : v1::DatasetExtents::COPIED);
    e->set_address(p.address);
    e->set_size(p.size);
    for (const ChunkExtent& c : p.chunks) {
      v1::Chunk* chunk = e->add_chunks();
      for (std::uint64_t x : c.coords) chunk->add_coords(x);
      chunk->set_filter_mask(c.filter_mask);
      chunk->set_address(c.address);
      chunk->set_size(c.size);
    }
  }
  return reply;
}

SkeletonPlan from_message(const v1::DescribeReply& message) {
  SkeletonPlan plan;
  plan.copied_bytes = message.copied_bytes();
  plan.notes.assign(message.notes().begin(), message.notes().end());
  for (const v1::DatasetExtents& e : message.datasets()) {
    DatasetPlan& p = plan.datasets.emplace_back();
    p.path = e.path();
    p.kind = e.kind() == v1::DatasetExtents::CONTIGUOUS ? DatasetPlan::Kind::kContiguous
             : e.kind() == v1::DatasetExtents::CHUNKED  ? DatasetPlan::Kind::kChunked
                                                        : DatasetPlan::Kind::kCopied;
    p.address = e.address();
    p.size = e.size();
    for (const v1::Chunk& c : e.chunks()) {
      p.chunks.push_back(
          {{c.coords().begin(), c.coords().end()}, c.filter_mask(), c.address(), c.size()});
    }
  }
  return plan;
}

}  // namespace loom::burstbuffer
