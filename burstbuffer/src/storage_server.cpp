// The storage agent's RPCs: opening files in its export as the caller (or, for an agent,
// as the job's user), lending ranges of them (storage_state.hpp), committing what was
// written, and describing HDF5 files' skeletons.
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>

#include "loom/burstbuffer/identity.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/munge.hpp"
#include "skeleton_reader.hpp"
#include "storage_state.hpp"

namespace loom::burstbuffer {

namespace fs = std::filesystem;

namespace {

// .NAME.loom-AGENT-XXXXXXXX: hidden, and whose it is. Without NAME where that would pass
// NAME_MAX; a '/' in the agent's name (which --name does not forbid) as '_'.
std::string temporary_name(const std::string& name, std::string agent) {
  std::ranges::replace(agent, '/', '_');
  const std::string suffix = fmt::format("loom-{}-{}", agent, random_token().substr(0, 8));
  const std::string whole = fmt::format(".{}.{}", name, suffix);
  return whole.size() <= NAME_MAX ? whole : "." + suffix;
}

}  // namespace

StorageServer::StorageServer(std::unique_ptr<State> state) : state_(std::move(state)) {}
StorageServer::~StorageServer() = default;

Result<std::unique_ptr<StorageServer>> StorageServer::open(const StorageExport& exported,
                                                           const DataPlaneOptions& options) {
  auto state = std::make_unique<State>();
  state->options = options;
  state->agent = exported.agent;
  if (::access(options.h5skeleton.c_str(), X_OK) != 0) {
    return make_error(ErrorCode::kNotFound,
                      fmt::format("cannot run {}, which reads users' HDF5 files: {}",
                                  options.h5skeleton.string(), errno_text(errno)));
  }
  state->root.reset(::open(exported.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!state->root)
    return std::unexpected(errno_error(fmt::format("export {}", exported.root.string()), errno));
  state->journal = LOOM_TRY(WriteJournal::open(exported.journal));
  if (const std::size_t swept = state->journal->sweep(state->root.get()); swept > 0) {
    spdlog::info(
        "storage: removed {} temporary file(s) that writes cut short by this agent's "
        "last stop left in {}",
        swept, exported.root.string());
  }
  state->endpoint = LOOM_TRY(
      with_context(open_endpoint(options.fabric), "opening the storage agent's fabric endpoint"));
  state->target = fabric::encode_name(state->endpoint->name());
  state->slots.resize(options.buffers);
  for (State::Slot& slot : state->slots) slot.memory = touched(options.range);
  State* raw = state.get();
  state->progress = std::make_unique<fabric::ProgressThread>(
      state->endpoint, fabric::ProgressOptions{.on_demand = true,
                                               .tick = std::chrono::seconds(1),
                                               .on_tick = [raw] { raw->expire_leases(); }});
  return std::unique_ptr<StorageServer>(new StorageServer(std::move(state)));
}

grpc::Status StorageServer::Open(grpc::ServerContext* context, const v1::OpenRequest* request,
                                 v1::OpenReply* reply) {
  auto who = munge_verify(request->credential());
  if (!who) return to_grpc(who.error());
  // Acting for another user is an agent's: where the cluster has a CA, only from a host that
  // holds its certificate, not from root on any machine that reaches this port.
  if (who->uid == 0 && !state_->options.tls.from_cluster_host(*context)) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("{} showed no certificate of the cluster's CA: only an agent (tls.cert, "
                        "tls.key) opens files for a job's user",
                        context->peer())};
  }
  // An agent (root) stages for a job's user and says whom; anyone else acts as themselves.
  const uid_t uid = who->uid == 0 ? request->uid() : who->uid;
  const gid_t gid = who->uid == 0 ? request->gid() : who->gid;
  const fs::path path(request->path());
  if (!path.is_absolute() || !path.has_filename()) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            fmt::format("{}: a file's absolute path in the export is expected", request->path())};
  }
  if (auto known = state_->know(request->initiator()); !known) return to_grpc(known.error());

  const std::string token = random_token();
  State::Handle h;
  h.write = request->write();
  h.path = request->path();
  h.uid = uid;
  h.gid = gid;
  h.used = Clock::now();
  const fs::path dir = path.parent_path() == "/" ? fs::path(".") : path.parent_path();
  if (h.write) {
    // Recorded as root, before the file exists: a crash from here on leaves a record.
    h.name = path.filename().string();
    h.temp = temporary_name(h.name, state_->agent);
    if (auto recorded = state_->journal->begin(token, {uid, gid, dir, h.temp}); !recorded)
      return to_grpc(recorded.error());
    h.journal_id = token;
  }
  const Status opened = [&]() -> Status {
    const FsIdentity as_user = LOOM_TRY(FsIdentity::assume(uid, gid));
    if (!h.write) {
      // Non-blocking: a FIFO named as the file must not hold this call until somebody
      // writes to it; it is refused below.
      h.file = std::make_shared<const UniqueFd>(
          LOOM_TRY(open_beneath(state_->root.get(), path, O_RDONLY | O_NONBLOCK)));
      struct stat st {};
      if (::fstat(h.file->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{} is not a regular file", request->path()));
      }
      reply->set_size(static_cast<std::uint64_t>(st.st_size));
      return {};
    }
    h.dir.reset(LOOM_TRY(open_beneath(state_->root.get(), dir, O_PATH | O_DIRECTORY)));
    h.file = std::make_shared<const UniqueFd>(::openat(
        h.dir.get(), h.temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    // The mode the user's umask gives, not this daemon's: set outright, since the process
    // umask (the daemon's, shared by its threads) would mask any mode asked for.
    const mode_t mode = 0666 & ~(request->has_umask() ? request->umask() & 0777 : 022);
    if (!*h.file || ::fchmod(h.file->get(), mode) != 0) {
      const Error e = errno_error(fmt::format("creating {}", request->path()), errno);
      if (!*h.file) h.temp.clear();  // not made: nothing to remove, nor anyone else's
      return std::unexpected(e);
    }
    return {};
  }();
  if (!opened) {
    if (!h.dir) h.temp.clear();  // the directory was not reached: nothing was made
    state_->close_handle(h);     // as root again: its record goes too
    return to_grpc(opened.error());
  }
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
  const std::shared_ptr<const UniqueFd> file = it->second.file;
  const std::string path = it->second.path;
  std::byte* data = s->memory.data();
  const std::string lease = s->lease;
  lock.unlock();
  grpc::Status result = grpc::Status::OK;
  if (crc32c(std::span(data, request->length())) != request->crc32c()) {
    result = {grpc::StatusCode::DATA_LOSS,
              fmt::format("bytes {}-{} of {} arrived damaged (CRC-32C mismatch)", request->offset(),
                          request->offset() + request->length(), path)};
  } else if (auto wrote = write_all(file->get(), data, request->length(), request->offset());
             !wrote) {
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
  if (::fsync(h.file->get()) != 0) {
    done = std::unexpected(errno_error("fsync " + h.path, errno));
  } else if (auto as_user = FsIdentity::assume(h.uid, h.gid); !as_user) {
    done = std::unexpected(as_user.error());
  } else if (::renameat(h.dir.get(), h.temp.c_str(), h.dir.get(), h.name.c_str()) != 0) {
    done = std::unexpected(errno_error("rename into " + h.path, errno));
  } else {
    h.temp.clear();  // in place: nothing to remove
  }
  state_->close_handle(h);
  return done ? grpc::Status::OK : to_grpc(done.error());
}

grpc::Status StorageServer::Close(grpc::ServerContext*, const v1::HandleRequest* request,
                                  v1::Empty*) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->handles.find(request->handle());
  if (it == state_->handles.end()) return grpc::Status::OK;
  state_->close_handle(it->second);
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
  const std::shared_ptr<const UniqueFd> file = it->second.file;
  const std::string path = it->second.path;
  const uid_t uid = it->second.uid;
  const gid_t gid = it->second.gid;
  lock.unlock();
  // The skeleton holds the user's data (small datasets, attributes), so it lives in memory
  // only (a memfd of this process; it once lay in /tmp, 0644), for as long as its handle.
  State::Handle h;
  h.path = path + " (skeleton)";
  h.used = Clock::now();
  h.file = std::make_shared<const UniqueFd>(::memfd_create("loom-skeleton", MFD_CLOEXEC));
  if (!*h.file) return to_grpc(errno_error("making the skeleton", errno));
  const std::vector<std::string> datasets(request->datasets().begin(), request->datasets().end());
  Result<v1::DescribeReply> described =
      describe_as_user(state_->options.h5skeleton, uid, gid, file->get(), h.file->get(), datasets);
  if (!described) {
    state_->close_handle(h);
    return to_grpc(Error(described.error()).with_context(path));
  }
  *reply = std::move(*described);
  struct stat st {};
  ::fstat(h.file->get(), &st);
  reply->set_skeleton_size(static_cast<std::uint64_t>(st.st_size));
  const std::string token = random_token();
  lock.lock();
  state_->handles.emplace(token, std::move(h));
  reply->set_skeleton(token);
  return grpc::Status::OK;
}

}  // namespace loom::burstbuffer
