#include "loom/agent/kept_slices.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "json_file.hpp"
#include "loom/burstbuffer/slice.hpp"

namespace loom::agent {

namespace fs = std::filesystem;

namespace {

fs::path record_path(const fs::path& device, std::uint64_t job) {
  return burstbuffer::slice_image(device, job).replace_extension(".kept");
}

struct Record {
  KeptSlice slice;
  std::int64_t kept_at = 0;  // nanoseconds since the epoch: eviction goes oldest first
};

std::optional<Record> read_record(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  try {
    Record r;
    r.slice.job = j.at("job").get<std::uint64_t>();
    r.slice.uid = j.at("uid").get<uid_t>();
    r.slice.bytes = j.at("bytes").get<std::uint64_t>();
    r.kept_at = j.at("kept_at").get<std::int64_t>();
    for (const nlohmann::json& f : j.at("staged")) {
      r.slice.staged.push_back({f.at("name").get<std::string>(), f.at("size").get<std::uint64_t>(),
                                f.at("mtime_ns").get<std::int64_t>(),
                                f.at("inode").get<std::uint64_t>()});
    }
    return r;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // not JSON (parse gave a discarded value), or lacking a field
  }
}

std::uint64_t images_bytes(const fs::path& device) {
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(device / ".loom", ec)) {
    if (entry.path().extension() == ".img") total += entry.file_size(ec);
  }
  return total;
}

}  // namespace

std::optional<FileStamp> stamp_of(int dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
    return std::nullopt;
  return FileStamp{name, static_cast<std::uint64_t>(st.st_size),
                   std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec, st.st_ino};
}

Status KeptSlices::keep(const fs::path& device, const KeptSlice& slice) const {
  nlohmann::json staged = nlohmann::json::array();
  for (const FileStamp& f : slice.staged) {
    staged.push_back(
        {{"name", f.name}, {"size", f.size}, {"mtime_ns", f.mtime_ns}, {"inode", f.inode}});
  }
  const nlohmann::json j{{"job", slice.job},
                         {"uid", slice.uid},
                         {"bytes", slice.bytes},
                         {"kept_at", std::chrono::system_clock::now().time_since_epoch().count()},
                         {"staged", staged}};
  std::lock_guard lock(mutex_);
  return write_json_file(record_path(device, slice.job), j);  // root's alone, as the image is
}

std::optional<KeptSlices::Claimed> KeptSlices::claim(std::uint64_t job) const {
  std::lock_guard lock(mutex_);
  for (const Config::NvmeDevice& d : devices_) {
    const fs::path path = record_path(d.path, job);
    if (!fs::exists(path)) continue;
    std::optional<Record> record = read_record(path);
    if (record && record->slice.job == job) {
      std::error_code ec;
      fs::remove(path, ec);
      return Claimed{d.path, std::move(record->slice)};
    }
    spdlog::warn("{} is not a kept slice's record; its slice is removed", path.string());
    remove(d.path, job);
  }
  return std::nullopt;
}

Status KeptSlices::with_room(const fs::path& device, std::uint64_t bytes,
                             const std::function<Status()>& make) const {
  std::lock_guard lock(mutex_);
  const auto it = std::ranges::find(devices_, device.string(), &Config::NvmeDevice::path);
  if (it != devices_.end()) {
    std::vector<std::pair<std::int64_t, std::uint64_t>> kept;  // kept_at, job
    for (std::uint64_t job : burstbuffer::job_files_on(device, ".kept")) {
      const std::optional<Record> r = read_record(record_path(device, job));
      kept.emplace_back(r ? r->kept_at : 0, job);  // one that cannot be read goes first
    }
    std::ranges::sort(kept);
    std::uint64_t used = images_bytes(device);
    for (const auto& [at, job] : kept) {
      if (used + bytes <= it->capacity) break;
      std::error_code ec;
      const std::uint64_t size = fs::file_size(burstbuffer::slice_image(device, job), ec);
      remove(device, job);
      used -= ec ? 0 : std::min(used, size);
      spdlog::info("job {}'s kept slice on {} removed: its room is needed", job, device.string());
    }
  }
  return make();
}

void KeptSlices::drop(std::uint64_t job) const {
  std::lock_guard lock(mutex_);
  for (const Config::NvmeDevice& d : devices_) {
    if (fs::exists(record_path(d.path, job))) {
      remove(d.path, job);
      spdlog::info("job {}'s kept slice on {} removed", job, d.path);
    }
  }
}

std::vector<std::uint64_t> KeptSlices::jobs() const {
  std::lock_guard lock(mutex_);
  std::vector<std::uint64_t> out;
  for (const Config::NvmeDevice& d : devices_) {
    for (std::uint64_t job : burstbuffer::job_files_on(d.path, ".kept")) out.push_back(job);
  }
  return out;
}

// The record first: a slice left without one (its removal failed) is an orphan, which the
// agent's next start sweeps.
void KeptSlices::remove(const fs::path& device, std::uint64_t job) const {
  std::error_code ec;
  fs::remove(record_path(device, job), ec);
  if (auto removed = burstbuffer::remove_slice(device, job); !removed) {
    spdlog::error("job {}'s kept slice on {}: {}", job, device.string(),
                  removed.error().to_string());
  }
}

}  // namespace loom::agent
