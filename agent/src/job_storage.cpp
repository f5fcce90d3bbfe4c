#include "loom/agent/job_storage.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "loom/burstbuffer/identity.hpp"
#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/printable.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::agent {

using burstbuffer::remove_slice;
using burstbuffer::slice_image;
using burstbuffer::slice_mount;
using burstbuffer::slice_name;
using burstbuffer::text_of;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path shm_job_dir(const fs::path& base, std::uint64_t job) {
  return base / fmt::format("job_{}", job);
}

Status make_shm_base(const fs::path& base) {
  std::error_code ec;
  fs::create_directories(base, ec);
  struct stat st {};
  if (::lstat(base.c_str(), &st) != 0) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("agent.shm_dir {}: {}", base.string(),
                                  ec ? ec.message() : loom::errno_text(errno)));
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != 0) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format("agent.shm_dir {} is {} of uid {}, not a directory of root's: "
                    "remove it, or set another agent.shm_dir",
                    base.string(), S_ISDIR(st.st_mode) ? "a directory" : "a file", st.st_uid));
  }
  if (::chmod(base.c_str(), 0711) != 0) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("chmod 0711 {}: {}", base.string(), loom::errno_text(errno)));
  }
  return {};
}

std::vector<std::uint64_t> shm_jobs_on(const fs::path& base) {
  std::vector<std::uint64_t> jobs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    std::uint64_t job = 0;
    if (!name.starts_with("job_")) continue;
    const char* end = name.data() + name.size();
    if (auto [at, err] = std::from_chars(name.data() + 4, end, job);
        err == std::errc() && at == end)
      jobs.push_back(job);
  }
  return jobs;
}

Status remove_shm_job_dir(const fs::path& base, std::uint64_t job) {
  // The base is root's: nobody else can have put a link in place of the directory, and
  // remove_all removes the links inside it, never what they point to.
  std::error_code ec;
  fs::remove_all(shm_job_dir(base, job), ec);
  if (ec)
    return make_error(
        ErrorCode::kInternal,
        fmt::format("cannot remove {}: {}", shm_job_dir(base, job).string(), ec.message()));
  return {};
}

Status StagerPool::with(const std::function<Status(burstbuffer::Stager&)>& copy) {
  std::lock_guard lock(mutex_);
  if (!stager_) stager_ = LOOM_TRY(burstbuffer::Stager::open(options_));
  Status copied = copy(*stager_);
  if (stager_->broken()) {
    // Before, every later staging of the node failed with it until loomd restarted.
    spdlog::warn(
        "staging: a transfer got no completion in time; the next copy opens a new "
        "fabric endpoint");
    stager_.reset();
  }
  return copied;
}

JobStorage::JobStorage(v1::Launch launch, std::string node, fs::path shm_base,
                       std::shared_ptr<StagerPool> stagers, std::shared_ptr<const KeptSlices> kept)
    : launch_(std::move(launch)),
      node_(std::move(node)),
      shm_base_(std::move(shm_base)),
      stagers_(std::move(stagers)),
      kept_(std::move(kept)) {
  std::vector<char> buffer(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(launch_.uid(), &pw, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr)
    gid_ = pw.pw_gid;
  // Known from the start, so that `loom show` lists what is waiting; and found again after
  // an agent restart (a slice is found by its path).
  for (const v1::StageIn& in : launch_.spec().stage_in_files()) {
    const fs::path staged = slice_mount(launch_.bb_device(), launch_.job()) / slice_name(in);
    File f;
    f.shown.set_direction("in");
    f.shown.set_source(text_of(in));
    f.shown.set_dest(fmt::format("{}:{}", node_, staged.string()));
    f.shown.set_state("waiting");
    f.shown.set_node(node_);
    f.progress = std::make_shared<burstbuffer::FileProgress>();
    files_.push_back(std::move(f));
    staged_.push_back(staged.string());
  }
  if (stages_out()) {
    for (const v1::StageOut& out : launch_.spec().stage_out_files()) {
      const std::string name = fs::path(out.slice_path()).filename().string() +
                               (launch_.spec().stage_out_all() ? "." + node_ : "");
      File f;
      f.shown.set_direction("out");
      f.shown.set_source(fmt::format(
          "{}:{}", node_,
          (slice_mount(launch_.bb_device(), launch_.job()) / out.slice_path()).string()));
      f.shown.set_dest(
          fmt::format("{}:{}", out.export_name(), (fs::path(out.dir()) / name).string()));
      f.shown.set_state("waiting");
      f.shown.set_node(node_);
      f.progress = std::make_shared<burstbuffer::FileProgress>();
      files_.push_back(std::move(f));
    }
  }
}

bool JobStorage::stages_out() const {
  return launch_.spec().stage_out_files_size() > 0 &&
         (launch_.node_index() == 0 || launch_.spec().stage_out_all());
}

Result<burstbuffer::Remote> JobStorage::remote(const std::string& node) const {
  auto it = launch_.storage().find(node);
  if (it == launch_.storage().end()) {
    return make_error(
        ErrorCode::kUnavailable,
        fmt::format("no storage agent named {} is connected to the controller", node));
  }
  const std::string credential = LOOM_TRY(munge_credential());
  const v1::JobSpec& spec = launch_.spec();
  return burstbuffer::Remote{it->second, credential, launch_.uid(), gid_,
                             spec.has_umask() ? spec.umask() : 022};
}

Status JobStorage::copy(
    File& file,
    const std::function<Status(burstbuffer::Stager&, burstbuffer::FileProgress&)>& body) {
  {
    std::lock_guard lock(mutex_);
    file.shown.set_state("running");
    file.started = Clock::now();
  }
  staging_.store(true);
  Status done =
      stagers_->with([&](burstbuffer::Stager& stager) { return body(stager, *file.progress); });
  staging_.store(false);
  std::lock_guard lock(mutex_);
  file.ended = Clock::now();
  file.shown.set_state(done ? "done" : "failed");
  if (!done) file.shown.set_error(valid_utf8(done.error().message()));
  return done;
}

Status JobStorage::make_shm_dir() const {
  LOOM_TRY(make_shm_base(shm_base_));  // made at the agent's start; checked again
  struct stat st {};
  const fs::path dir = shm_job_dir(shm_base_, launch_.job());
  if (::mkdir(dir.c_str(), 0700) == 0) {
    if (::chown(dir.c_str(), launch_.uid(), gid_) == 0) return {};
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot give {} to uid {}: {}", dir.string(), launch_.uid(),
                                  loom::errno_text(errno)));
  }
  if (errno != EEXIST)
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot make {}: {}", dir.string(), loom::errno_text(errno)));
  // Made already for this job by another agent sharing the machine's /dev/shm.
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != launch_.uid()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("{} exists and is not the job's", dir.string()));
  }
  return {};
}

std::expected<void, StorageFailure> JobStorage::prepare(const std::atomic<bool>& cancelled) {
  auto failed = [](v1::Reason reason, Error error) {
    return std::unexpected(StorageFailure{reason, std::move(error)});
  };
  if (launch_.spec().mpi()) {
    if (Status made = make_shm_dir(); !made) {
      return failed(v1::REASON_LAUNCH_FAILED,
                    std::move(made.error()).with_context("the job's shared-memory directory"));
    }
  }
  if (launch_.bb_device().empty()) return {};
  const fs::path device = launch_.bb_device();
  const std::vector<FileStamp> kept = reclaim();
  if (!slice_) {
    Status made = kept_->with_room(device, launch_.bb_bytes(), [&]() -> Status {
      auto slice = burstbuffer::Slice::create(
          {slice_image(device, launch_.job()), slice_mount(device, launch_.job()),
           launch_.bb_bytes(), launch_.uid(), gid_, 0700, true});
      if (!slice) return std::unexpected(std::move(slice).error());
      slice_.emplace(std::move(*slice));
      return {};
    });
    if (!made) {
      (void)teardown();
      return failed(v1::REASON_LAUNCH_FAILED,
                    std::move(made.error()).with_context("creating the burst-buffer slice"));
    }
  }
  const UniqueFd root(::open(slice_->dir().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  std::size_t index = 0;
  for (const v1::StageIn& in : launch_.spec().stage_in_files()) {
    File& file = files_.at(index++);
    const std::optional<FileStamp> found =
        root ? stamp_of(root.get(), slice_name(in)) : std::nullopt;
    if (found && std::ranges::find(kept, *found) != kept.end()) {
      std::lock_guard lock(mutex_);
      file.shown.set_state("done");
      file.shown.add_notes("kept in the slice from the job's run before its preemption");
      file.progress->total.store(found->size);
      file.progress->done.store(found->size);
      file.started = file.ended = Clock::now();
      file.stamp = found;
      continue;
    }
    Status copied =
        copy(file, [&](burstbuffer::Stager& stager, burstbuffer::FileProgress& progress) -> Status {
          const burstbuffer::Remote r = LOOM_TRY(remote(in.export_name()));
          auto as_user = LOOM_TRY(burstbuffer::FsIdentity::assume(launch_.uid(), gid_));
          const UniqueFd dir(::open(slice_->dir().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
          if (!dir)
            return make_error(ErrorCode::kInternal,
                              fmt::format("cannot open the slice {}: {}", slice_->dir().string(),
                                          loom::errno_text(errno)));
          const std::vector<std::string> datasets(in.datasets().begin(), in.datasets().end());
          std::vector<std::string> notes;
          Status s = stager.fetch(r, in.path(), dir.get(), slice_name(in), progress, cancelled,
                                  datasets, &notes);
          std::lock_guard lock(mutex_);
          for (const std::string& note : notes) file.shown.add_notes(valid_utf8(note));
          return s;
        });
    if (copied && root) {
      std::lock_guard lock(mutex_);
      file.stamp = stamp_of(root.get(), slice_name(in));
    }
    if (!copied) {
      (void)teardown();
      return failed(v1::REASON_STAGE_IN_FAILED,
                    Error(copied.error().code(), fmt::format("{} into {}'s slice: {}", text_of(in),
                                                             node_, copied.error().message())));
    }
  }
  return {};
}

std::map<std::string, std::string> JobStorage::environment() const {
  std::map<std::string, std::string> out;
  if (launch_.spec().mpi()) {
    // Open MPI 4's names; mpirun passes them on to its daemons on the other nodes.
    const std::string dir = shm_job_dir(shm_base_, launch_.job()).string();
    out["OMPI_MCA_orte_tmpdir_base"] = dir;
    out["OMPI_MCA_btl_vader_backing_directory"] = dir;
  }
  if (launch_.bb_device().empty()) return out;
  std::string staged;
  for (const std::string& path : staged_) staged += (staged.empty() ? "" : ":") + path;
  out["LOOM_BB_DIR"] = slice_mount(launch_.bb_device(), launch_.job()).string();
  out["LOOM_STAGED_FILES"] = staged;
  return out;
}

Status JobStorage::stage_out(const std::atomic<bool>& cancelled) {
  if (!stages_out() || launch_.bb_device().empty()) return {};
  const fs::path mount = slice_mount(launch_.bb_device(), launch_.job());
  auto index = static_cast<std::size_t>(launch_.spec().stage_in_files_size());
  Status result;
  for (const v1::StageOut& out : launch_.spec().stage_out_files()) {
    File& file = files_.at(index++);
    const std::string name = fs::path(out.slice_path()).filename().string() +
                             (launch_.spec().stage_out_all() ? "." + node_ : "");
    Status copied =
        copy(file, [&](burstbuffer::Stager& stager, burstbuffer::FileProgress& progress) -> Status {
          const burstbuffer::Remote r = LOOM_TRY(remote(out.export_name()));
          UniqueFd fd;
          {
            auto as_user = LOOM_TRY(burstbuffer::FsIdentity::assume(launch_.uid(), gid_));
            const UniqueFd root(::open(mount.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!root)
              return make_error(ErrorCode::kInternal,
                                fmt::format("cannot open the slice {}: {}", mount.string(),
                                            loom::errno_text(errno)));
            // Non-blocking: a FIFO the job left must not hold the node's stager (store()
            // refuses anything but a regular file).
            auto opened =
                burstbuffer::open_beneath(root.get(), out.slice_path(), O_RDONLY | O_NONBLOCK);
            if (!opened) return std::unexpected(std::move(opened).error());
            fd.reset(*opened);
          }
          return stager.store(r, fd.get(), (fs::path(out.dir()) / name).string(), progress,
                              cancelled);
        });
    if (!copied && result) {
      // The first failure is the job's; the other files are still staged out.
      result = make_error(copied.error().code(),
                          fmt::format("{} from {}'s slice to {}:{}: {}", out.slice_path(), node_,
                                      out.export_name(), out.dir(), copied.error().message()));
    }
  }
  return result;
}

std::vector<FileStamp> JobStorage::reclaim() {
  std::optional<KeptSlices::Claimed> claimed = kept_->claim(launch_.job());
  if (!claimed) return {};
  if (claimed->device == launch_.bb_device() && claimed->slice.bytes == launch_.bb_bytes() &&
      claimed->slice.uid == launch_.uid()) {
    auto found = burstbuffer::Slice::attach(slice_image(claimed->device, launch_.job()),
                                            slice_mount(claimed->device, launch_.job()));
    if (found) {
      spdlog::info("job {}: its slice kept on {} is its own again", launch_.job(),
                   claimed->device.string());
      slice_.emplace(std::move(*found));
      return std::move(claimed->slice.staged);
    }
    spdlog::warn("job {}: its kept slice: {}", launch_.job(), found.error().to_string());
  }
  if (auto removed = remove_slice(claimed->device, launch_.job()); !removed)
    spdlog::error("job {}: its kept slice: {}", launch_.job(), removed.error().to_string());
  return {};
}

std::vector<FileStamp> JobStorage::stamps() const {
  std::lock_guard lock(mutex_);
  std::vector<FileStamp> out;
  for (const File& f : files_) {
    if (f.stamp) out.push_back(*f.stamp);
  }
  return out;
}

Status JobStorage::teardown() {
  Status shm = launch_.spec().mpi() ? remove_shm_job_dir(shm_base_, launch_.job()) : Status{};
  const fs::path device = launch_.bb_device();
  if (keep_.load() && !device.empty() && fs::exists(slice_image(device, launch_.job()))) {
    Status kept = kept_->keep(device, {launch_.job(), launch_.uid(), launch_.bb_bytes(), stamps()});
    if (kept) {
      slice_.reset();  // left mounted, as the job left it
      return shm;
    }
    spdlog::error("job {}: its slice cannot be kept, and is removed: {}", launch_.job(),
                  kept.error().to_string());
  }
  Status slice;
  if (slice_) {
    slice = slice_->destroy();
    slice_.reset();
  } else if (!launch_.bb_device().empty()) {
    slice = remove_slice(launch_.bb_device(),
                         launch_.job());  // an agent after a restart: found by its path
  }
  return slice ? shm : slice;
}

v1::StagingReport JobStorage::report() const {
  v1::StagingReport report;
  report.set_job(launch_.job());
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  for (const File& f : files_) {
    v1::StagingFile* shown = report.add_files();
    *shown = f.shown;
    shown->set_bytes_done(f.progress->done.load());
    shown->set_bytes_total(f.progress->total.load());
    if (f.shown.state() != "waiting") {
      const auto until = f.shown.state() == "running" ? now : f.ended;
      const double seconds = std::chrono::duration<double>(until - f.started).count();
      if (seconds > 0) shown->set_rate_bps(static_cast<double>(shown->bytes_done()) / seconds);
    }
    if (f.shown.direction() == "out" && f.shown.state() != "waiting") report.set_out(true);
  }
  return report;
}

}  // namespace loom::agent
