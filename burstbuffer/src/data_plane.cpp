#include "loom/burstbuffer/data_plane.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <rdma/fi_errno.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <type_traits>
#include <vector>

#include "loom/burstbuffer/hdf5_plan.hpp"
#include "loom/burstbuffer/identity.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/crc32c.hpp"
#include "loom/common/munge.hpp"
#include "loom/fabric/engine.hpp"
#include "loom/fabric/wire.hpp"
#include "loom/proto/status.hpp"

namespace loom::burstbuffer {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string random_token() {
  std::array<unsigned char, 16> bytes{};
  for (std::size_t got = 0; got < bytes.size();) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  std::string out;
  for (unsigned char b : bytes) out += fmt::format("{:02x}", b);
  return out;
}

// A storage agent's refusal, or its absence said as such.
Error storage_error(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return Error(ErrorCode::kUnavailable,
                 fmt::format("the storage agent is unreachable ({})", s.error_message()));
  }
  return from_grpc(s);
}

// Worth another try: the storage agent did not answer, had no buffer free, or the bytes
// arrived damaged. A refusal (no such file, not allowed, no space) is final.
bool retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::ABORTED ||
         s.error_code() == grpc::StatusCode::DATA_LOSS;
}

Error errno_error(std::string_view what, int e) {
  return Error(e == ENOSPC   ? ErrorCode::kResourceExhausted
               : e == EACCES ? ErrorCode::kPermissionDenied
                             : ErrorCode::kInternal,
               fmt::format("{}: {}", what, std::strerror(e)));
}

Status read_all(int fd, std::byte* data, std::size_t length, std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pread(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(errno_error("read", errno));
    if (n == 0)
      return make_error(ErrorCode::kFailedPrecondition,
                        "the file is shorter than it was when opened (changed while staged?)");
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status write_all(int fd, const std::byte* data, std::size_t length, std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(errno_error("write", errno));
    done += static_cast<std::size_t>(n);
  }
  return {};
}

// Memory touched once, up front: registering pins pages that exist, and fresh pages cost
// more to fault in than the copy that fills them (../shared/MACHINE.md).
std::unique_ptr<std::byte[]> touched(std::size_t size) {
  auto memory = std::make_unique<std::byte[]>(size);
  std::memset(memory.get(), 0, size);
  return memory;
}

// The stager's side of a transfer: its own memory, registered for its own use only. The
// stager starts every transfer, so no peer is given access to these bytes.
struct Buffer {
  std::unique_ptr<std::byte[]> memory;
  std::unique_ptr<fabric::MemoryRegion> region;
};

Result<std::shared_ptr<fabric::Endpoint>> open_endpoint(const fabric::Options& options) {
  fabric::Info info = LOOM_TRY(fabric::Info::choose(options));
  auto f = LOOM_TRY(fabric::Fabric::open(info));
  auto domain = LOOM_TRY(fabric::Domain::open(f, info));
  return fabric::Endpoint::open(domain);
}

Result<std::vector<Buffer>> local_buffers(const fabric::Endpoint& endpoint, std::size_t count,
                                          std::size_t size) {
  std::vector<Buffer> buffers(count);
  for (Buffer& b : buffers) {
    b.memory = touched(size);
    b.region = LOOM_TRY(
        fabric::MemoryRegion::register_memory(endpoint, b.memory.get(), size, FI_READ | FI_WRITE));
  }
  return buffers;
}

}  // namespace

// ---- The storage agent's side ----

struct StorageServer::State {
  struct Handle {
    int fd = -1;
    int dir_fd = -1;  // writing: the directory the file goes in
    bool write = false;
    std::string path;  // as asked, for messages
    std::string temp, name;
    uid_t uid = 0;
    gid_t gid = 0;
    Clock::time_point used;
  };
  // A buffer lent to one range of one copy at a time. What a peer may reach is registered
  // per lease: exactly the leased bytes, for the one access the lease is for (the peer reads
  // what Fetch put there, or writes what Commit will check), under a random key, and
  // closed before the slot is lent again. Every registered byte holds the lease's own data
  // or zeros, never an earlier copy's.
  struct Slot {
    std::unique_ptr<std::byte[]> memory;
    std::unique_ptr<fabric::MemoryRegion> region;  // while leased and exposed
    std::string lease;                             // empty: free
    std::string handle;
    std::uint64_t offset = 0, length = 0;
    Clock::time_point deadline;
  };

  int root = -1;
  DataPlaneOptions options;
  std::shared_ptr<fabric::Endpoint> endpoint;
  std::string target;  // the endpoint's name, hex

  std::mutex mutex;  // guards handles and slots
  std::condition_variable freed;
  std::map<std::string, Handle> handles;
  std::vector<Slot> slots;

  // The fabric thread owns the endpoint (FI_THREAD_DOMAIN): it drives the provider while a
  // lease is out (a peer's fi_read or fi_write progresses only while the target polls,
  // under FI_PROGRESS_MANUAL) and sleeps otherwise; every other use of the domain
  // (inserting initiators' addresses, registering and closing leases' regions) is a call
  // it runs. Lock order: `mutex`, then `fabric_mutex`.
  std::mutex fabric_mutex;
  std::condition_variable fabric_wake;
  int leased = 0;
  bool stopping = false;
  std::deque<std::function<void()>> calls;
  std::set<std::string> known;  // names inserted, hex; the fabric thread's
  std::thread fabric_thread;

  ~State() {
    {
      std::lock_guard lock(fabric_mutex);
      stopping = true;
    }
    fabric_wake.notify_all();
    if (fabric_thread.joinable()) fabric_thread.join();
    for (auto& [token, h] : handles) close_handle(h);
    if (root >= 0) ::close(root);
  }

  void drive() {
    std::array<fi_cq_entry, 16> entries{};
    auto next_expiry_check = Clock::now();
    std::unique_lock lock(fabric_mutex);
    for (;;) {
      fabric_wake.wait(lock, [&] { return stopping || leased > 0 || !calls.empty(); });
      while (!calls.empty()) {
        std::function<void()> call = std::move(calls.front());
        calls.pop_front();
        call();
      }
      if (stopping) return;
      if (leased == 0) continue;
      lock.unlock();
      const ssize_t n = fi_cq_read(endpoint->cq().get(), entries.data(), entries.size());
      if (n == -FI_EAVAIL) {
        fi_cq_err_entry err{};
        fi_cq_readerr(endpoint->cq().get(), &err, 0);
      }
      if (n <= 0) std::this_thread::yield();
      if (Clock::now() >= next_expiry_check) {
        expire_leases();
        next_expiry_check = Clock::now() + std::chrono::seconds(1);
      }
      lock.lock();
    }
  }

  // Runs `call` on the fabric thread and returns what it returns. Not from the fabric
  // thread itself.
  template <typename F>
  std::invoke_result_t<F> on_fabric(F call) {
    std::packaged_task<std::invoke_result_t<F>()> task(std::move(call));
    auto result = task.get_future();
    {
      std::lock_guard lock(fabric_mutex);
      calls.emplace_back([&task] { task(); });
    }
    fabric_wake.notify_all();
    return result.get();
  }

  // Inserts an initiator's endpoint name (hex) into the address vector, once.
  Status know(const std::string& hex) {
    std::vector<std::byte> name = LOOM_TRY(fabric::decode_name(hex));
    return on_fabric([&]() -> Status {
      if (known.contains(hex)) return {};
      LOOM_TRY(endpoint->av().insert(name));
      known.insert(hex);
      return {};
    });
  }

  // Lets the lease's holder reach exactly `length` bytes of its slot, for `access` only.
  // Under `mutex`, with the lease checked: a slot lent again is never exposed for the old one.
  Status expose(Slot& s, std::size_t length, std::uint64_t access) {
    auto region = on_fabric([&] {
      return fabric::MemoryRegion::register_memory(*endpoint, s.memory.get(), length, access);
    });
    if (!region) return std::unexpected(region.error());
    s.region = std::move(*region);
    return {};
  }

  // Closes the slot's registration: its key reaches nothing from here on.
  void conceal(Slot& s) {
    if (s.region) on_fabric([&] { s.region.reset(); });
  }

  // On the fabric thread: leases whose holder never gave them back are taken back now, not
  // when the slot is next wanted, so that their keys die with them. Skipped while another
  // thread holds `mutex` (it may be waiting on a call of this thread's).
  void expire_leases() {
    std::unique_lock state(mutex, std::try_to_lock);
    if (!state) return;
    const auto now = Clock::now();
    for (Slot& s : slots) {
      if (s.lease.empty() || s.deadline > now) continue;
      spdlog::warn("storage: a lease on {} was not released within {} s; taken back", s.handle,
                   options.lease_timeout.count());
      s.region.reset();
      s.lease.clear();
      lease_count(-1);
      freed.notify_one();
    }
  }

  void lease_count(int delta) {
    {
      std::lock_guard lock(fabric_mutex);
      leased += delta;
    }
    fabric_wake.notify_all();
  }

  static void close_handle(Handle& h) {
    if (h.write && !h.temp.empty())
      ::unlinkat(h.dir_fd, h.temp.c_str(), 0);  // never finished: nothing partial stays
    if (h.fd >= 0) ::close(h.fd);
    if (h.dir_fd >= 0) ::close(h.dir_fd);
    h.fd = h.dir_fd = -1;
  }

  // Takes a free slot (or one whose lease ran out) for the handle's range; waits a while
  // when every buffer is lent.
  Result<std::size_t> acquire(std::unique_lock<std::mutex>& lock, const std::string& handle,
                              std::uint64_t offset, std::uint64_t length) {
    const auto give_up = Clock::now() + std::chrono::seconds(5);
    for (;;) {
      const auto now = Clock::now();
      for (std::size_t i = 0; i < slots.size(); ++i) {
        Slot& s = slots[i];
        if (!s.lease.empty() && s.deadline > now) continue;
        if (!s.lease.empty()) {
          spdlog::warn("storage: a lease on {} was not released within {} s; taken back", s.handle,
                       options.lease_timeout.count());
          release(s);
        }
        s.lease = random_token();
        s.handle = handle;
        s.offset = offset;
        s.length = length;
        s.deadline = now + options.lease_timeout;
        lease_count(+1);
        return i;
      }
      if (freed.wait_until(lock, give_up) == std::cv_status::timeout) {
        return make_error(ErrorCode::kUnavailable,
                          "every staging buffer of the storage agent is in use");
      }
    }
  }

  void release(Slot& s) {
    conceal(s);
    s.lease.clear();
    lease_count(-1);
    freed.notify_one();
  }

  Slot* find_lease(const std::string& lease) {
    for (Slot& s : slots) {
      if (!lease.empty() && s.lease == lease) return &s;
    }
    return nullptr;
  }

  // Lends a slot for a range of an open file: filled from the file to be read (Fetch), or
  // cleared to be written (Reserve); then exposed for that one access.
  grpc::Status lend(const v1::RangeRequest& request, bool write, v1::Lease& reply) {
    if (request.length() == 0 || request.length() > options.range) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              fmt::format("a range of {} bytes (1 to {}, a buffer, expected)", request.length(),
                          options.range)};
    }
    const auto length = static_cast<std::size_t>(request.length());
    std::unique_lock lock(mutex);
    auto it = handles.find(request.handle());
    if (it == handles.end() || it->second.write != write) {
      return {grpc::StatusCode::NOT_FOUND,
              write ? "no such file being written (closed, or the storage agent restarted)"
                    : "no such open file (closed, or the storage agent restarted)"};
    }
    it->second.used = Clock::now();
    const int fd = it->second.fd;
    const std::string path = it->second.path;
    auto slot = acquire(lock, request.handle(), request.offset(), length);
    if (!slot) return {grpc::StatusCode::ABORTED, slot.error().message()};
    const std::string lease = slots[*slot].lease;
    std::byte* data = slots[*slot].memory.get();
    lock.unlock();
    // Outside the lock: other ranges are read meanwhile. The slot is this call's alone.
    Status filled;
    std::uint32_t crc = 0;
    if (write) {
      std::memset(data, 0, length);
    } else {
      filled = read_all(fd, data, length, request.offset());
      if (filled) crc = crc32c(std::span(data, length));
    }
    lock.lock();
    Slot* held = find_lease(lease);
    if (held == nullptr) {
      return {grpc::StatusCode::ABORTED,
              fmt::format("the lease on {} ran out before it was granted", path)};
    }
    if (filled) filled = expose(*held, length, write ? FI_REMOTE_WRITE : FI_REMOTE_READ);
    if (!filled) {
      release(*held);
      return to_grpc(Error(filled.error()).with_context(path));
    }
    reply.set_id(lease);
    reply.set_region(fabric::encode_region(held->region->remote()));
    reply.set_crc32c(crc);
    return grpc::Status::OK;
  }

  // Forgets handles nobody has used for a long time: their initiator is gone.
  void sweep() {
    const auto stale = Clock::now() - options.lease_timeout * 4;
    for (auto it = handles.begin(); it != handles.end();) {
      if (it->second.used > stale) {
        ++it;
        continue;
      }
      spdlog::warn("storage: {} was left open by a stager that went away; closed", it->second.path);
      close_handle(it->second);
      it = handles.erase(it);
    }
  }
};

StorageServer::StorageServer(std::unique_ptr<State> state) : state_(std::move(state)) {}
StorageServer::~StorageServer() = default;

Result<std::unique_ptr<StorageServer>> StorageServer::open(const fs::path& export_root,
                                                           DataPlaneOptions options) {
  auto state = std::make_unique<State>();
  state->options = options;
  state->root = ::open(export_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (state->root < 0)
    return std::unexpected(errno_error(fmt::format("export {}", export_root.string()), errno));
  state->endpoint = LOOM_TRY(
      with_context(open_endpoint(options.fabric), "opening the storage agent's fabric endpoint"));
  state->target = fabric::encode_name(state->endpoint->name());
  state->slots.resize(options.buffers);
  for (State::Slot& slot : state->slots) slot.memory = touched(options.range);
  State* raw = state.get();
  state->fabric_thread = std::thread([raw] { raw->drive(); });
  return std::unique_ptr<StorageServer>(new StorageServer(std::move(state)));
}

grpc::Status StorageServer::Open(grpc::ServerContext*, const v1::OpenRequest* request,
                                 v1::OpenReply* reply) {
  auto who = munge_verify(request->credential());
  if (!who) return to_grpc(who.error());
  // An agent (root) stages for a job's user and says whom; anyone else acts as themselves.
  const uid_t uid = who->uid == 0 ? request->uid() : who->uid;
  const gid_t gid = who->uid == 0 ? request->gid() : who->gid;
  const fs::path path(request->path());
  if (!path.is_absolute() || !path.has_filename()) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            fmt::format("{}: a file's absolute path in the export is expected", request->path())};
  }
  if (auto known = state_->know(request->initiator()); !known) return to_grpc(known.error());

  State::Handle h;
  h.write = request->write();
  h.path = request->path();
  h.uid = uid;
  h.gid = gid;
  h.used = Clock::now();
  {
    auto as_user = FsIdentity::assume(uid, gid);
    if (!as_user) return to_grpc(as_user.error());
    if (!h.write) {
      // Non-blocking: a FIFO named as the file must not hold this call until somebody
      // writes to it; it is refused below.
      auto fd = open_beneath(state_->root, path, O_RDONLY | O_NONBLOCK);
      if (!fd) return to_grpc(fd.error());
      h.fd = *fd;
      struct stat st {};
      if (::fstat(h.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(h.fd);
        return {grpc::StatusCode::INVALID_ARGUMENT,
                fmt::format("{} is not a regular file", request->path())};
      }
      reply->set_size(static_cast<std::uint64_t>(st.st_size));
    } else {
      const fs::path dir = path.parent_path() == "/" ? fs::path(".") : path.parent_path();
      auto dir_fd = open_beneath(state_->root, dir, O_PATH | O_DIRECTORY);
      if (!dir_fd) return to_grpc(dir_fd.error());
      h.dir_fd = *dir_fd;
      h.name = path.filename().string();
      h.temp = fmt::format(".{}.loom-{}", h.name, random_token().substr(0, 8));
      h.fd = ::openat(h.dir_fd, h.temp.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      // The mode the user's umask gives, not this daemon's: set outright, since the
      // process umask (the daemon's, shared by its threads) would mask any mode asked for.
      const mode_t mode = 0666 & ~(request->has_umask() ? request->umask() & 0777 : 022);
      if (h.fd < 0 || ::fchmod(h.fd, mode) != 0) {
        const Error e = errno_error(fmt::format("creating {}", request->path()), errno);
        State::close_handle(h);
        return to_grpc(e);
      }
    }
  }
  const std::string token = random_token();
  std::lock_guard lock(state_->mutex);
  state_->sweep();
  state_->handles.emplace(token, std::move(h));
  reply->set_handle(token);
  reply->set_target(state_->target);
  return grpc::Status::OK;
}

grpc::Status StorageServer::Fetch(grpc::ServerContext*, const v1::RangeRequest* request,
                                  v1::Lease* reply) {
  return state_->lend(*request, false, *reply);
}

grpc::Status StorageServer::Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                                    v1::Empty*) {
  std::lock_guard lock(state_->mutex);
  if (State::Slot* s = state_->find_lease(request->lease())) state_->release(*s);
  return grpc::Status::OK;
}

grpc::Status StorageServer::Reserve(grpc::ServerContext*, const v1::RangeRequest* request,
                                    v1::Lease* reply) {
  return state_->lend(*request, true, *reply);
}

grpc::Status StorageServer::Commit(grpc::ServerContext*, const v1::CommitRequest* request,
                                   v1::Empty*) {
  std::unique_lock lock(state_->mutex);
  State::Slot* s = state_->find_lease(request->lease());
  auto it = state_->handles.find(request->handle());
  if (s == nullptr || it == state_->handles.end() || s->handle != request->handle() ||
      s->offset != request->offset() || s->length != request->length()) {
    return {grpc::StatusCode::NOT_FOUND,
            "no such lease for this range (it ran out, or the storage agent restarted)"};
  }
  // The peer's writes end here: what is checked is what is written.
  state_->conceal(*s);
  it->second.used = Clock::now();
  const int fd = it->second.fd;
  const std::string path = it->second.path;
  std::byte* data = s->memory.get();
  const std::string lease = s->lease;
  lock.unlock();
  grpc::Status result = grpc::Status::OK;
  if (crc32c(std::span(data, request->length())) != request->crc32c()) {
    result = {grpc::StatusCode::DATA_LOSS,
              fmt::format("bytes {}-{} of {} arrived damaged (CRC-32C mismatch)", request->offset(),
                          request->offset() + request->length(), path)};
  } else if (auto wrote = write_all(fd, data, request->length(), request->offset()); !wrote) {
    result = to_grpc(wrote.error().with_context(path));
  }
  lock.lock();
  if (State::Slot* held = state_->find_lease(lease)) state_->release(*held);
  return result;
}

grpc::Status StorageServer::Finish(grpc::ServerContext*, const v1::HandleRequest* request,
                                   v1::Empty*) {
  std::unique_lock lock(state_->mutex);
  auto it = state_->handles.find(request->handle());
  if (it == state_->handles.end() || !it->second.write)
    return {grpc::StatusCode::NOT_FOUND, "no such file being written"};
  State::Handle h = std::move(it->second);
  state_->handles.erase(it);
  lock.unlock();
  Status done;
  if (::fsync(h.fd) != 0) {
    done = std::unexpected(errno_error("fsync " + h.path, errno));
  } else if (auto as_user = FsIdentity::assume(h.uid, h.gid); !as_user) {
    done = std::unexpected(as_user.error());
  } else if (::renameat(h.dir_fd, h.temp.c_str(), h.dir_fd, h.name.c_str()) != 0) {
    done = std::unexpected(errno_error("rename into " + h.path, errno));
  } else {
    h.temp.clear();  // in place: nothing to remove
  }
  State::close_handle(h);
  return done ? grpc::Status::OK : to_grpc(done.error());
}

grpc::Status StorageServer::Close(grpc::ServerContext*, const v1::HandleRequest* request,
                                  v1::Empty*) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->handles.find(request->handle());
  if (it == state_->handles.end()) return grpc::Status::OK;
  State::close_handle(it->second);
  for (State::Slot& s : state_->slots) {
    if (!s.lease.empty() && s.handle == request->handle()) state_->release(s);
  }
  state_->handles.erase(it);
  return grpc::Status::OK;
}

grpc::Status StorageServer::Describe(grpc::ServerContext*, const v1::DescribeRequest* request,
                                     v1::DescribeReply* reply) {
  std::unique_lock lock(state_->mutex);
  auto it = state_->handles.find(request->handle());
  if (it == state_->handles.end() || it->second.write)
    return {grpc::StatusCode::NOT_FOUND,
            "no such open file (closed, or the storage agent restarted)"};
  it->second.used = Clock::now();
  const int fd = it->second.fd;
  const std::string path = it->second.path;
  const uid_t uid = it->second.uid;
  const gid_t gid = it->second.gid;
  lock.unlock();
  // HDF5 opens files by name: the descriptor opened beneath the export, as the user, is
  // the name. The skeleton holds the user's data (small datasets, attributes), so it lives
  // in memory only (a memfd of this process; it once lay in /tmp, 0644), for as long as its
  // handle.
  State::Handle h;
  h.path = path + " (skeleton)";
  h.used = Clock::now();
  h.fd = ::memfd_create("loom-skeleton", MFD_CLOEXEC);
  if (h.fd < 0) return to_grpc(errno_error("making the skeleton", errno));
  const Result<SkeletonPlan> plan = [&]() -> Result<SkeletonPlan> {
    const FsIdentity as_user = LOOM_TRY(FsIdentity::assume(uid, gid));
    std::vector<std::string> datasets(request->datasets().begin(), request->datasets().end());
    return write_skeleton(fmt::format("/proc/self/fd/{}", fd), datasets, h.fd);
  }();
  if (!plan) {
    State::close_handle(h);
    return to_grpc(Error(plan.error()).with_context(path));
  }
  struct stat st {};
  ::fstat(h.fd, &st);
  reply->set_skeleton_size(static_cast<std::uint64_t>(st.st_size));
  reply->set_copied_bytes(plan->copied_bytes);
  for (const std::string& note : plan->notes) reply->add_notes(note);
  for (const DatasetPlan& p : plan->datasets) {
    v1::DatasetExtents* e = reply->add_datasets();
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
  const std::string token = random_token();
  lock.lock();
  state_->handles.emplace(token, std::move(h));
  reply->set_skeleton(token);
  return grpc::Status::OK;
}

// ---- The initiating side ----

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

Result<std::unique_ptr<Stager>> Stager::open(DataPlaneOptions options) {
  auto state = std::make_unique<State>();
  state->options = options;
  state->endpoint = LOOM_TRY(
      with_context(open_endpoint(options.fabric), "opening a fabric endpoint for staging"));
  state->name = fabric::encode_name(state->endpoint->name());
  state->engine = std::make_unique<fabric::TransferEngine>(state->endpoint);
  state->buffers = LOOM_TRY(local_buffers(*state->endpoint, options.buffers, options.range));
  return std::unique_ptr<Stager>(new Stager(std::move(state)));
}

namespace {

std::unique_ptr<grpc::ClientContext> call_context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
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
                                  const std::string& path, bool write,
                                  const std::string& initiator) {
  v1::OpenRequest open;
  open.set_credential(remote.credential);
  open.set_path(path);
  open.set_write(write);
  open.set_uid(remote.uid);
  open.set_gid(remote.gid);
  open.set_initiator(initiator);
  if (write) open.set_umask(remote.umask);
  v1::OpenReply opened;
  if (auto s = stub.Open(call_context().get(), open, &opened); !s.ok())
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
  const grpc::Status s = write ? stub.Reserve(call_context().get(), range, &lease)
                               : stub.Fetch(call_context().get(), range, &lease);
  if (!s.ok()) return {retryable(s) ? Outcome::kRetry : Outcome::kFail, storage_error(s)};
  auto region = fabric::decode_region(lease.region());
  if (!region) return {Outcome::kFail, region.error()};
  std::lock_guard lock(mover.mutex);
  Status moved = write ? mover.engine.write(*buffer.region, 0, mover.peer, *region, 0, length)
                       : mover.engine.read(*buffer.region, 0, mover.peer, *region, 0, length);
  if (!moved) return {Outcome::kRetry, moved.error()};
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
  const Mover mover{st.engine_mutex, *st.engine, peer};
  // Pieces close together in the file (small datasets, compressed chunks) travel together:
  // one lease and one transfer for as many as fit a buffer, the gaps between them (a few
  // KiB of the file's metadata) moved along rather than paid for in round trips.
  constexpr std::uint64_t kGap = 64 << 10;
  struct Range {
    std::uint64_t offset = 0, length = 0;
    std::vector<std::size_t> pieces;
  };
  std::vector<std::size_t> order(pieces.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return pieces[a].offset < pieces[b].offset; });
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
            (void)stub.Release(call_context().get(), release, &ignored);
          }
          if (moved.outcome != Outcome::kDone) return moved;
          if (crc32c(std::span(buffer.memory.get(), length)) != lease.crc32c()) {
            return {Outcome::kRetry,
                    Error(ErrorCode::kDataLoss, "arrived damaged (CRC-32C mismatch)")};
          }
          for (std::size_t i : range.pieces) {
            const Piece& piece = pieces[i];
            if (auto wrote = piece.write(buffer.memory.get() + (piece.offset - range.offset));
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
  auto stub =
      v1::Storage::NewStub(grpc::CreateChannel(remote.address, grpc::InsecureChannelCredentials()));
  const v1::OpenReply opened = LOOM_TRY(open_remote(*stub, remote, path, false, st.name));
  std::vector<std::string> handles{opened.handle()};
  auto close_remote = [&] {
    for (const std::string& h : handles) {
      v1::HandleRequest request;
      request.set_handle(h);
      v1::Empty ignored;
      (void)stub->Close(call_context().get(), request, &ignored);
    }
  };
  const std::string temp = fmt::format(".{}.loom-partial", name);
  int fd = -1;
  auto copy = [&]() -> Status {
    const fi_addr_t peer = LOOM_TRY(st.peer(opened.target()));
    fd =
        ::openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return std::unexpected(errno_error("creating " + name, errno));
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
    if (auto s = stub->Describe(call_context().get(), describe, &described); !s.ok())
      return std::unexpected(storage_error(s));
    handles.push_back(described.skeleton());
    if (notes) notes->assign(described.notes().begin(), described.notes().end());
    SkeletonPlan plan;
    std::uint64_t total = described.skeleton_size();
    for (const v1::DatasetExtents& e : described.datasets()) {
      DatasetPlan& p = plan.datasets.emplace_back();
      p.path = e.path();
      p.kind = e.kind() == v1::DatasetExtents::CONTIGUOUS ? DatasetPlan::Kind::kContiguous
               : e.kind() == v1::DatasetExtents::CHUNKED  ? DatasetPlan::Kind::kChunked
                                                          : DatasetPlan::Kind::kCopied;
      p.address = e.address();
      p.size = e.size();
      total += e.size();
      for (const v1::Chunk& c : e.chunks()) {
        if (c.size() > st.options.range) {
          return make_error(
              ErrorCode::kInvalidArgument,
              fmt::format("dataset {} has a chunk of {} bytes, more than a staging buffer ({})",
                          e.path(), c.size(), st.options.range));
        }
        p.chunks.push_back(
            {{c.coords().begin(), c.coords().end()}, c.filter_mask(), c.address(), c.size()});
        total += c.size();
      }
    }
    progress.total.store(total);
    std::vector<Piece> skeleton;
    add_ranges(skeleton, 0, described.skeleton_size(), st.options.range, fd, 0);
    LOOM_TRY(pull(*stub, peer, described.skeleton(), skeleton, progress, cancelled));
    auto destination = LOOM_TRY(Hdf5Destination::open(fmt::format("/proc/self/fd/{}", fd), plan));
    std::vector<Piece> pieces;
    for (std::size_t i = 0; i < plan.datasets.size(); ++i) {
      const DatasetPlan& p = plan.datasets[i];
      if (p.kind == DatasetPlan::Kind::kContiguous)
        add_ranges(pieces, p.address, p.size, st.options.range, fd, destination->offset(i));
      for (const ChunkExtent& c : p.chunks) {
        pieces.push_back({c.address, static_cast<std::size_t>(c.size),
                          [&destination, i, &c, &p](const std::byte* data) {
                            return with_context(destination->write_chunk(i, c, data),
                                                "writing a chunk of " + p.path);
                          }});
      }
    }
    LOOM_TRY(pull(*stub, peer, opened.handle(), pieces, progress, cancelled));
    return destination->close();
  };
  Status copied = copy();
  close_remote();
  if (fd >= 0) {
    if (copied && ::fsync(fd) != 0) copied = std::unexpected(errno_error("fsync " + name, errno));
    ::close(fd);
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
  auto stub =
      v1::Storage::NewStub(grpc::CreateChannel(remote.address, grpc::InsecureChannelCredentials()));
  const v1::OpenReply opened = LOOM_TRY(open_remote(*stub, remote, path, true, st.name));
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
                    if (auto read = read_all(fd, buffer.memory.get(), length, offset); !read)
                      return std::unexpected(read.error());
                    const std::uint32_t crc = crc32c(std::span(buffer.memory.get(), length));
                    const Mover mover{st.engine_mutex, *st.engine, *peer};
                    return retrying(st.options.attempts, offset, length, [&]() -> Attempt {
                      v1::Lease lease;
                      const Attempt moved = lease_and_move(*stub, mover, true, opened.handle(),
                                                           offset, length, buffer, lease);
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
                      const grpc::Status committed =
                          stub->Commit(call_context().get(), commit, &ignored);
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
    if (auto s = stub->Finish(call_context().get(), handle, &ignored); !s.ok())
      copied = std::unexpected(storage_error(s));
  } else {
    (void)stub->Close(call_context().get(), handle, &ignored);
  }
  return copied;
}

}  // namespace loom::burstbuffer
