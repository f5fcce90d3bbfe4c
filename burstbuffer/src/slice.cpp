#include "loom/burstbuffer/slice.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/loop.h>
#include <linux/openat2.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/unique_fd.hpp"

extern char** environ;

namespace loom::burstbuffer {

namespace {

namespace fs = std::filesystem;

std::unexpected<Error> system_error(std::string_view what) {
  return make_error(ErrorCode::kInternal, fmt::format("{}: {}", what, loom::errno_text(errno)));
}

Status run(std::vector<std::string> argv) {
  const std::vector<char*> args = exec_args(argv);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // nothing of the agent's
  pid_t pid = -1;
  const int spawned = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    return make_error(ErrorCode::kNotFound,
                      fmt::format("cannot run {}: {}", argv[0], loom::errno_text(spawned)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return make_error(ErrorCode::kInternal, fmt::format("{} failed (status {})", argv[0], status));
  }
  return {};
}

// A free loop device bound to the image, and an open descriptor of it. With autoclear the
// device unbinds itself when its last user goes: keep the descriptor open until the device
// is mounted (the mount is then its user until umount).
// An attached loop device, open: the caller mounts it and then lets it go.
struct Loop {
  std::string device;
  UniqueFd fd;
};

Result<Loop> attach_loop(const fs::path& image) {
  const UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) return system_error("open /dev/loop-control");
  for (int attempt = 0; attempt < 8; ++attempt) {  // another process may take the device first
    const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) return system_error("LOOP_CTL_GET_FREE");
    const std::string device = fmt::format("/dev/loop{}", number);
    UniqueFd loop(::open(device.c_str(), O_RDWR | O_CLOEXEC));
    if (!loop) return system_error("open " + device);
    const UniqueFd backing(::open(image.c_str(), O_RDWR | O_CLOEXEC));
    if (!backing) return system_error("open " + image.string());
    loop_config config{};
    config.fd = static_cast<std::uint32_t>(backing.get());
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), image.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(loop.get(), LOOP_CONFIGURE, &config) == 0) return Loop{device, std::move(loop)};
    if (errno != EBUSY) return system_error("LOOP_CONFIGURE " + device);
  }
  return make_error(ErrorCode::kResourceExhausted, "no free loop device after 8 attempts");
}

}  // namespace

bool is_mounted(const fs::path& dir) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string target = fs::weakly_canonical(dir).string();
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devices, root, mount_point;
    fields >> id >> parent >> devices >> root >> mount_point;
    if (mount_point == target) return true;
  }
  return false;
}

Result<Slice> Slice::create(const SliceSpec& spec) {
  if (spec.bytes < (1u << 20))
    return make_error(ErrorCode::kInvalidArgument, "a slice needs at least 1 MiB");
  std::error_code ec;
  fs::create_directories(spec.image.parent_path(), ec);
  fs::create_directories(spec.mount, ec);
  if (ec)
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot create {}: {}", spec.mount.string(), ec.message()));
  Slice slice(spec.image, spec.mount);  // from here, failures clean up through destroy()
  auto fail = [&](Error e) -> Result<Slice> {
    (void)slice.destroy();
    return std::unexpected(std::move(e));
  };
  {
    const UniqueFd fd(::open(spec.image.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return fail(system_error("create " + spec.image.string()).error());
    // fallocate, not a sparse file: the device's bytes are the slice's from the start, so
    // that a full device is full for the scheduler and for the filesystem alike.
    const int rc = spec.preallocate
                       ? ::posix_fallocate(fd.get(), 0, static_cast<off_t>(spec.bytes))
                       : (::ftruncate(fd.get(), static_cast<off_t>(spec.bytes)) == 0 ? 0 : errno);
    if (rc != 0) {
      errno = rc;
      return fail(
          system_error(fmt::format("reserve {} bytes for {}", spec.bytes, spec.image.string()))
              .error());
    }
  }
  // Scratch space: no journal, no blocks reserved for root, few inodes; the root belongs
  // to the user from the start. No discard: mkfs would punch the preallocated blocks out
  // of the image again, and a device the scheduler counts as full would take more.
  if (auto made =
          run({"mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-i", "65536", "-E",
               fmt::format("root_owner={}:{},nodiscard", spec.uid, spec.gid), spec.image.string()});
      !made) {
    return fail(made.error());
  }
  auto loop = attach_loop(spec.image);
  if (!loop) return fail(loop.error());
  const int mounted =
      ::mount(loop->device.c_str(), spec.mount.c_str(), "ext4", MS_NOSUID | MS_NODEV, "");
  const int saved = errno;
  loop->fd.reset();  // from here the mount holds the device; umount frees it
  if (mounted != 0) {
    errno = saved;
    return fail(
        system_error(fmt::format("mount {} on {}", loop->device, spec.mount.string())).error());
  }
  if (::chmod(spec.mount.c_str(), spec.mode) != 0)
    return fail(system_error("chmod " + spec.mount.string()).error());
  fs::remove(spec.mount / "lost+found", ec);
  return slice;
}

Result<Slice> Slice::find(const fs::path& image, const fs::path& mount) {
  if (!fs::exists(image) || !is_mounted(mount)) {
    return make_error(ErrorCode::kNotFound,
                      fmt::format("no slice {} mounted on {}", image.string(), mount.string()));
  }
  return Slice(image, mount);
}

Result<Slice> Slice::attach(const fs::path& image, const fs::path& mount) {
  if (auto found = find(image, mount)) return found;
  if (!fs::exists(image))
    return make_error(ErrorCode::kNotFound, fmt::format("no image {}", image.string()));
  std::error_code ec;
  fs::create_directories(mount, ec);
  auto loop = LOOM_TRY(attach_loop(image));
  const int mounted = ::mount(loop.device.c_str(), mount.c_str(), "ext4", MS_NOSUID | MS_NODEV, "");
  const int saved = errno;
  loop.fd.reset();
  if (mounted != 0) {
    errno = saved;
    return system_error(fmt::format("mount {} on {}", loop.device, mount.string()));
  }
  return Slice(image, mount);
}

Slice::~Slice() = default;

Status Slice::destroy() {
  if (mount_.empty()) return {};
  if (is_mounted(mount_) && ::umount2(mount_.c_str(), 0) != 0) {
    // A process still holds it (a job's leftover reader): detach it now; the loop device
    // and the image's space go when the last holder does.
    if (errno != EBUSY || ::umount2(mount_.c_str(), MNT_DETACH) != 0)
      return system_error("umount " + mount_.string());
  }
  std::error_code ec;
  fs::remove(mount_, ec);
  fs::remove(image_, ec);
  if (ec)
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot remove {}: {}", image_.string(), ec.message()));
  mount_.clear();
  return {};
}

std::vector<std::string> buffers_on(const fs::path& device) {
  std::vector<std::string> slices;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(device / ".loom", ec)) {
    const std::string file = entry.path().filename().string();
    if (file.starts_with("bb_") && file.ends_with(".img") && file.size() > 7)
      slices.push_back(file.substr(3, file.size() - 7));
  }
  std::ranges::sort(slices);
  return slices;
}

std::vector<std::uint64_t> slices_on(const fs::path& device) {
  return job_files_on(device, ".img");
}

std::vector<std::uint64_t> job_files_on(const fs::path& device, std::string_view extension) {
  std::vector<std::uint64_t> jobs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(device / ".loom", ec)) {
    const std::string name = entry.path().filename().string();
    std::uint64_t job = 0;
    if (std::sscanf(name.c_str(), "job_%lu", &job) == 1 &&
        name == fmt::format("job_{}{}", job, extension))
      jobs.push_back(job);
  }
  return jobs;
}

Status remove_slice(const fs::path& device, std::uint64_t job) {
  auto slice = Slice::find(slice_image(device, job), slice_mount(device, job));
  if (slice) return slice->destroy();
  std::error_code ec;  // never mounted, or half made: what is there goes
  fs::remove(slice_mount(device, job), ec);
  fs::remove(slice_image(device, job), ec);
  return {};
}

Result<int> open_beneath(int root, const fs::path& path, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const fs::path relative = path.is_absolute() ? path.relative_path() : path;
  const int fd =
      static_cast<int>(::syscall(SYS_openat2, root, relative.c_str(), &how, sizeof(how)));
  if (fd < 0) {
    const int e = errno;
    const std::string why = e == ELOOP    ? "it is or goes through a symbolic link"
                            : e == EXDEV  ? "it leads outside the directory it must stay in"
                            : e == ENOENT ? "it does not exist"
                                          : loom::errno_text(e);
    return make_error(e == ENOENT ? ErrorCode::kNotFound : ErrorCode::kPermissionDenied,
                      fmt::format("refusing {}: {}", path.string(), why));
  }
  return fd;
}

}  // namespace loom::burstbuffer
