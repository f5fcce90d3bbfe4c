// The initiating side of the data plane: a stager pulls a file (or the datasets of an HDF5
// file) from a storage agent into a slice, or pushes one back, through its own registered
// buffers, with the storage agent's leases.
#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <rdma/fi_errno.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "data_plane_io.hpp"
#include "described_plan.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/crc32c.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/fabric/engine.hpp"
#include "loom/fabric/wire.hpp"
#include "loom/proto/status.hpp"
#include "skeleton_reader.hpp"

namespace loom::burstbuffer {

namespace {

using Clock = std::chrono::steady_clock;

// A storage agent's refusal, or its absence said as such.
Error storage_error(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return {ErrorCode::kDeadlineExceeded,
            "the storage agent did not answer within staging.stall_timeout"};
  }
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return {ErrorCode::kUnavailable,
            fmt::format("the storage agent is unreachable ({})", s.error_message())};
  }
  return from_grpc(s);
}

// Worth another try: the storage agent did not answer, had no buffer free, or the bytes
// arrived damaged. A refusal (no such file, not allowed, no space) is final.
// Not a stall (DEADLINE_EXCEEDED): a copy with no progress for staging.stall_timeout fails.
bool retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::ABORTED ||
         s.error_code() == grpc::StatusCode::DATA_LOSS;
}

// The stager's side of a transfer: its own memory, registered for its own use only. The
// stager starts every transfer, so no peer is given access to these bytes.
struct Buffer {
  std::vector<std::byte> memory;
  std::unique_ptr<fabric::MemoryRegion> region;
};

Result<std::vector<Buffer>> local_buffers(const fabric::Endpoint& endpoint, std::size_t count,
                                          std::size_t size) {
  std::vector<Buffer> buffers(count);
  for (Buffer& b : buffers) {
    b.memory = touched(size);
    b.region = LOOM_TRY(
        fabric::MemoryRegion::register_memory(endpoint, b.memory.data(), size, FI_READ | FI_WRITE));
  }
  return buffers;
}

}  // namespace

struct Stager::State {
  DataPlaneOptions options;
  std::shared_ptr<fabric::Endpoint> endpoint;
  std::string name;         // hex, for Open
  std::mutex engine_mutex;  // the endpoint's domain is used by one thread at a time
  std::unique_ptr<fabric::TransferEngine> engine;
  std::map<std::string, fi_addr_t> peers;
  std::vector<Buffer> buffers;

  Result<fi_addr_t> peer(const std::string& target) {
    std::lock_guard lock(engine_mutex);
    if (auto it = peers.find(target); it != peers.end()) return it->second;
    const std::vector<std::byte> raw = LOOM_TRY(fabric::decode_name(target));
    const fi_addr_t address = LOOM_TRY(endpoint->av().insert(raw));
    peers[target] = address;
    return address;
  }
};

Stager::Stager(std::unique_ptr<State> state) : state_(std::move(state)) {}
Stager::~Stager() = default;

bool Stager::broken() const {
  std::lock_guard lock(state_->engine_mutex);
  return state_->engine->broken();
}

Result<std::unique_ptr<Stager>> Stager::open(const DataPlaneOptions& options) {
  auto state = std::make_unique<State>();
  state->options = options;
  state->endpoint = LOOM_TRY(
      with_context(open_endpoint(options.fabric), "opening a fabric endpoint for staging"));
  state->name = fabric::encode_name(state->endpoint->name());
  state->engine = std::make_unique<fabric::TransferEngine>(
      state->endpoint, fabric::EngineOptions{.timeout = options.stall_timeout});
  state->buffers = LOOM_TRY(local_buffers(*state->endpoint, options.buffers, options.range));
  return std::unique_ptr<Stager>(new Stager(std::move(state)));
}

namespace {

// A call that has had no answer for `stall` (staging.stall_timeout) fails.
std::unique_ptr<grpc::ClientContext> call_context(std::chrono::seconds stall) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + stall);
  return context;
}

// Runs `one(worker, i)` for i in [0, count), on `workers` threads at a time, until every
// one is done or one fails; the first failure is the result.
Status for_each_index(std::size_t count, std::size_t workers, const std::atomic<bool>& cancelled,
                      const std::function<Status(std::size_t worker, std::size_t i)>& one) {
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::optional<Error> failed;
  auto work = [&](std::size_t worker) {
    for (std::size_t i; (i = next.fetch_add(1)) < count;) {
      {
        std::lock_guard lock(mutex);
        if (failed) return;
      }
      if (cancelled.load()) {
        std::lock_guard lock(mutex);
        if (!failed) failed = Error(ErrorCode::kCancelled, "cancelled");
        return;
      }
      if (auto done = one(worker, i); !done) {
        std::lock_guard lock(mutex);
        if (!failed) failed = done.error();
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  const std::size_t n = std::min(workers, count);
  for (std::size_t w = 1; w < n; ++w) threads.emplace_back(work, w);
  if (n > 0) work(0);
  for (std::thread& t : threads) t.join();
  if (failed) return std::unexpected(*failed);
  return {};
}

Status for_each_range(std::uint64_t size, std::size_t range, std::size_t workers,
                      const std::atomic<bool>& cancelled,
                      const std::function<Status(std::size_t worker, std::uint64_t offset,
                                                 std::size_t length)>& one) {
  return for_each_index(
      static_cast<std::size_t>((size + range - 1) / range), workers, cancelled,
      [&](std::size_t worker, std::size_t i) {
        const std::uint64_t offset = std::uint64_t{i} * range;
        return one(worker, offset,
                   static_cast<std::size_t>(std::min<std::uint64_t>(range, size - offset)));
      });
}

// Opens the export's file for reading, or a temporary beside it for writing.
Result<v1::OpenReply> open_remote(v1::Storage::Stub& stub, const Remote& remote,
                                  const std::string& path, bool write, const std::string& initiator,
                                  std::chrono::seconds stall) {
  v1::OpenRequest open;
  open.set_credential(remote.credential);
  open.set_path(path);
  open.set_write(write);
  open.set_uid(remote.uid);
  open.set_gid(remote.gid);
  open.set_initiator(initiator);
  if (write) open.set_umask(remote.umask);
  v1::OpenReply opened;
  if (auto s = stub.Open(call_context(stall).get(), open, &opened); !s.ok())
    return std::unexpected(storage_error(s));
  return opened;
}

// How one try at a range went: done, worth another try, or refused for good.
enum class Outcome { kDone, kRetry, kFail };
struct Attempt {
  Outcome outcome = Outcome::kDone;
  Error error{ErrorCode::kInternal, ""};
};

// Tries a range up to `attempts` times, backing off between tries; the last error, with the
// range's bytes named, when it never succeeds.
Status retrying(int attempts, std::uint64_t offset, std::size_t length,
                const std::function<Attempt()>& attempt) {
  Error last(ErrorCode::kInternal, "no attempt made");
  for (int i = 1; i <= attempts; ++i) {
    if (i > 1) std::this_thread::sleep_for(std::chrono::milliseconds(100 * i));
    Attempt a = attempt();
    if (a.outcome == Outcome::kDone) return {};
    last = std::move(a.error);
    if (a.outcome == Outcome::kFail) break;
  }
  return make_error(last.code(),
                    fmt::format("bytes {}-{}: {}", offset, offset + length, last.message()));
}

// The stager's endpoint, one transfer at a time (FI_THREAD_DOMAIN), and the peer.
struct Mover {
  std::mutex& mutex;
  fabric::TransferEngine& engine;
  fi_addr_t peer;
  std::chrono::seconds stall;  // staging.stall_timeout
};

// Leases the storage agent's buffer for a range (Fetch to read, Reserve to write) and moves
// the bytes between it and `buffer` over the fabric. `lease` is set once one is granted:
// the caller gives it back (Release, Commit) whatever happened next.
Attempt lease_and_move(v1::Storage::Stub& stub, const Mover& mover, bool write,
                       const std::string& handle, std::uint64_t offset, std::size_t length,
                       Buffer& buffer, v1::Lease& lease) {
  v1::RangeRequest range;
  range.set_handle(handle);
  range.set_offset(offset);
  range.set_length(length);
  const grpc::Status s = write ? stub.Reserve(call_context(mover.stall).get(), range, &lease)
                               : stub.Fetch(call_context(mover.stall).get(), range, &lease);
  if (!s.ok()) return {retryable(s) ? Outcome::kRetry : Outcome::kFail, storage_error(s)};
  auto region = fabric::decode_region(lease.region());
  if (!region) return {Outcome::kFail, region.error()};
  std::lock_guard lock(mover.mutex);
  Status moved = write ? mover.engine.write(*buffer.region, 0, mover.peer, *region, 0, length)
                       : mover.engine.read(*buffer.region, 0, mover.peer, *region, 0, length);
  // A timeout leaves the engine refusing every transfer: another try would only hide it.
  if (!moved) return {mover.engine.broken() ? Outcome::kFail : Outcome::kRetry, moved.error()};
  return {};
}

}  // namespace

// Bytes to read from an open remote file, and what to do with them once they have arrived
// whole and checked.
struct Piece {
  std::uint64_t offset = 0;
  std::size_t length = 0;
  std::function<Status(const std::byte*)> write;
};

Status Stager::pull(v1::Storage::Stub& stub, fi_addr_t peer, const std::string& handle,
                    const std::vector<Piece>& pieces, FileProgress& progress,
                    const std::atomic<bool>& cancelled) {
  State& st = *state_;
  const Mover mover{st.engine_mutex, *st.engine, peer, st.options.stall_timeout};
  // Pieces close together in the file (small datasets, compressed chunks) travel together:
  // one lease and one transfer for as many as fit a buffer, the gaps between them (a few
  // KiB of the file's metadata) moved along rather than paid for in round trips.
  constexpr std::uint64_t kGap = 64 << 10;
  struct Range {
    std::uint64_t offset = 0, length = 0;
    std::vector<std::size_t> pieces;
  };
  std::vector<std::size_t> order;
  order.reserve(pieces.size());
  for (std::size_t i = 0; i < pieces.size(); ++i) order.push_back(i);
  std::ranges::sort(
      order, [&](std::size_t a, std::size_t b) { return pieces[a].offset < pieces[b].offset; });
  std::vector<Range> ranges;
  for (std::size_t i : order) {
    const Piece& p = pieces[i];
    if (!ranges.empty()) {
      Range& last = ranges.back();
      const std::uint64_t end = std::max(last.offset + last.length, p.offset + p.length);
      if (p.offset <= last.offset + last.length + kGap && end - last.offset <= st.options.range) {
        last.length = end - last.offset;
        last.pieces.push_back(i);
        continue;
      }
    }
    ranges.push_back({p.offset, p.length, {i}});
  }
  return for_each_index(
      ranges.size(), st.buffers.size(), cancelled,
      [&](std::size_t worker, std::size_t r) -> Status {
        const Range& range = ranges[r];
        Buffer& buffer = st.buffers[worker];
        const auto length = static_cast<std::size_t>(range.length);
        return retrying(st.options.attempts, range.offset, length, [&]() -> Attempt {
          v1::Lease lease;
          Attempt moved =
              lease_and_move(stub, mover, false, handle, range.offset, length, buffer, lease);
          if (!lease.id().empty()) {
            v1::ReleaseRequest release;
            release.set_lease(lease.id());
            v1::Empty ignored;
            (void)stub.Release(call_context(mover.stall).get(), release, &ignored);
          }
          if (moved.outcome != Outcome::kDone) return moved;
          if (crc32c(std::span(buffer.memory.data(), length)) != lease.crc32c()) {
            return {Outcome::kRetry,
                    Error(ErrorCode::kDataLoss, "arrived damaged (CRC-32C mismatch)")};
          }
          for (std::size_t i : range.pieces) {
            const Piece& piece = pieces[i];
            if (auto wrote = piece.write(buffer.memory.data() + (piece.offset - range.offset));
                !wrote)
              return {Outcome::kFail, wrote.error()};
            progress.done.fetch_add(piece.length);
          }
          return {};
        });
      });
}

namespace {

// The pieces of [0, size) of a remote file, written at the same offsets of `fd` plus `shift`.
void add_ranges(std::vector<Piece>& pieces, std::uint64_t from, std::uint64_t size,
                std::size_t range, int fd, std::uint64_t to) {
  for (std::uint64_t done = 0; done < size; done += range) {
    const auto length = static_cast<std::size_t>(std::min<std::uint64_t>(range, size - done));
    pieces.push_back({from + done, length, [fd, at = to + done, length](const std::byte* data) {
                        return write_all(fd, data, length, at);
                      }});
  }
}

}  // namespace

Status Stager::fetch(const Remote& remote, const std::string& path, int dir_fd,
                     const std::string& name, FileProgress& progress,
                     const std::atomic<bool>& cancelled, std::span<const std::string> datasets,
                     std::vector<std::string>* notes) {
  State& st = *state_;
  auto stub = v1::Storage::NewStub(grpc::CreateChannel(remote.address, st.options.tls.channel()));
  const v1::OpenReply opened =
      LOOM_TRY(open_remote(*stub, remote, path, false, st.name, st.options.stall_timeout));
  std::vector<std::string> handles{opened.handle()};
  auto close_remote = [&] {
    for (const std::string& h : handles) {
      v1::HandleRequest request;
      request.set_handle(h);
      v1::Empty ignored;
      (void)stub->Close(call_context(st.options.stall_timeout).get(), request, &ignored);
    }
  };
  const std::string temp = fmt::format(".{}.loom-partial", name);
  UniqueFd file;
  auto copy = [&]() -> Status {
    const fi_addr_t peer = LOOM_TRY(st.peer(opened.target()));
    file.reset(::openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                        0600));
    const int fd = file.get();
    if (!file) return std::unexpected(errno_error("creating " + name, errno));
    progress.done.store(0);
    if (datasets.empty()) {
      progress.total.store(opened.size());
      std::vector<Piece> pieces;
      add_ranges(pieces, 0, opened.size(), st.options.range, fd, 0);
      return pull(*stub, peer, opened.handle(), pieces, progress, cancelled);
    }
    // HDF5 datasets: the skeleton first, then each dataset's raw data where it belongs.
    v1::DescribeRequest describe;
    describe.set_handle(opened.handle());
    for (const std::string& d : datasets) describe.add_datasets(d);
    v1::DescribeReply described;
    // Reading a file's structure is one call, given the reader's own time besides.
    const auto reading = st.options.stall_timeout + SkeletonLimits::kTimeout;
    if (auto s = stub->Describe(call_context(reading).get(), describe, &described); !s.ok())
      return std::unexpected(storage_error(s));
    handles.push_back(described.skeleton());
    if (notes) notes->assign(described.notes().begin(), described.notes().end());
    const SkeletonPlan plan =
        LOOM_TRY(with_context(plan_of(described, opened.size(), st.options.range), path));
    progress.total.store(described.skeleton_size() + bytes_of(plan));
    std::vector<Piece> skeleton;
    add_ranges(skeleton, 0, described.skeleton_size(), st.options.range, fd, 0);
    LOOM_TRY(pull(*stub, peer, described.skeleton(), skeleton, progress, cancelled));
    // Where each extent goes: the skeleton came from the user's file, so HDF5 reads it in
    // loom-h5skeleton, as the skeleton's owner, and this process only writes bytes.
    const SkeletonPlan placed = LOOM_TRY(
        with_context(place_as_owner(st.options.h5skeleton, fd, plan), path + " (skeleton)"));
    LOOM_TRY(with_context(same_shape(plan, placed), path + " (skeleton)"));
    std::vector<Piece> pieces;
    for (std::size_t i = 0; i < plan.datasets.size(); ++i) {
      const DatasetPlan &from = plan.datasets[i], &to = placed.datasets[i];
      if (from.kind == DatasetPlan::Kind::kContiguous)
        add_ranges(pieces, from.address, from.size, st.options.range, fd, to.address);
      for (std::size_t c = 0; c < from.chunks.size(); ++c) {
        add_ranges(pieces, from.chunks[c].address, from.chunks[c].size, st.options.range, fd,
                   to.chunks[c].address);
      }
    }
    return pull(*stub, peer, opened.handle(), pieces, progress, cancelled);
  };
  Status copied = copy();
  close_remote();
  if (file) {
    if (copied && ::fsync(file.get()) != 0)
      copied = std::unexpected(errno_error("fsync " + name, errno));
    file.reset();
  }
  if (copied && ::renameat(dir_fd, temp.c_str(), dir_fd, name.c_str()) != 0)
    copied = std::unexpected(errno_error("rename " + name, errno));
  if (!copied) ::unlinkat(dir_fd, temp.c_str(), 0);
  return copied;
}

Status Stager::store(const Remote& remote, int fd, const std::string& path, FileProgress& progress,
                     const std::atomic<bool>& cancelled) {
  State& st = *state_;
  struct stat info {};
  if (::fstat(fd, &info) != 0) return std::unexpected(errno_error("fstat", errno));
  if (!S_ISREG(info.st_mode)) return make_error(ErrorCode::kInvalidArgument, "not a regular file");
  const auto size = static_cast<std::uint64_t>(info.st_size);
  auto stub = v1::Storage::NewStub(grpc::CreateChannel(remote.address, st.options.tls.channel()));
  const v1::OpenReply opened =
      LOOM_TRY(open_remote(*stub, remote, path, true, st.name, st.options.stall_timeout));
  v1::HandleRequest handle;
  handle.set_handle(opened.handle());
  auto peer = st.peer(opened.target());
  progress.total.store(size);
  progress.done.store(0);
  Status copied =
      !peer ? Status(std::unexpected(peer.error()))
            : for_each_range(
                  size, st.options.range, st.buffers.size(), cancelled,
                  [&](std::size_t worker, std::uint64_t offset, std::size_t length) -> Status {
                    Buffer& buffer = st.buffers[worker];
                    if (auto read = read_all(fd, buffer.memory.data(), length, offset); !read)
                      return std::unexpected(read.error());
                    const std::uint32_t crc = crc32c(std::span(buffer.memory.data(), length));
                    const Mover mover{st.engine_mutex, *st.engine, *peer, st.options.stall_timeout};
                    return retrying(st.options.attempts, offset, length, [&]() -> Attempt {
                      v1::Lease lease;
                      Attempt moved = lease_and_move(*stub, mover, true, opened.handle(), offset,
                                                     length, buffer, lease);
                      if (lease.id().empty()) return moved;
                      v1::CommitRequest commit;
                      commit.set_handle(opened.handle());
                      commit.set_lease(lease.id());
                      commit.set_offset(offset);
                      commit.set_length(length);
                      // A transfer that failed is committed with a checksum that cannot match: the
                      // storage agent then releases the buffer without writing it.
                      commit.set_crc32c(moved.outcome == Outcome::kDone ? crc : ~crc);
                      v1::Empty ignored;
                      const grpc::Status committed = stub->Commit(
                          call_context(st.options.stall_timeout).get(), commit, &ignored);
                      if (moved.outcome != Outcome::kDone) return moved;
                      if (committed.ok()) {
                        progress.done.fetch_add(length);
                        return {};
                      }
                      return {retryable(committed) ? Outcome::kRetry : Outcome::kFail,
                              storage_error(committed)};
                    });
                  });
  v1::Empty ignored;
  if (copied) {
    if (auto s = stub->Finish(call_context(st.options.stall_timeout).get(), handle, &ignored);
        !s.ok())
      copied = std::unexpected(storage_error(s));
  } else {
    (void)stub->Close(call_context(st.options.stall_timeout).get(), handle, &ignored);
  }
  return copied;
}

}  // namespace loom::burstbuffer
