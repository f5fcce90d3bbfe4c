#include "write_journal.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "loom/burstbuffer/identity.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::burstbuffer {

namespace fs = std::filesystem;

Result<WriteJournal> WriteJournal::open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || ::chmod(dir.c_str(), 0700) != 0) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("write journal {}: {}", dir.string(),
                                  ec ? ec.message() : loom::errno_text(errno)));
  }
  return WriteJournal(dir);
}

Status WriteJournal::begin(const std::string& id, const PendingWrite& write) const {
  const std::string text = nlohmann::json{
      {"uid", write.uid},
      {"gid", write.gid},
      {"dir", write.dir.string()},
      {"temp", write.temp}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // Not fsynced: the record is for a restart of this process, and the page cache outlives
  // it. A machine that loses power loses the unsynced temporary file's data too.
  const UniqueFd fd(::open((dir_ / id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int error = errno;
    std::error_code ignored;
    fs::remove(dir_ / id, ignored);
    return make_error(
        ErrorCode::kResourceExhausted,
        fmt::format("recording a write in {}: {}", dir_.string(), loom::errno_text(error)));
  }
  return {};
}

void WriteJournal::end(const std::string& id) const {
  std::error_code ignored;
  fs::remove(dir_ / id, ignored);
}

namespace {

Result<PendingWrite> read_record(const fs::path& file) {
  std::ifstream in(file);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  const auto bad = [&] {
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("write record {} does not parse", file.string()));
  };
  if (!j.is_object() || !j.contains("uid") || !j.contains("gid") || !j.contains("dir") ||
      !j.contains("temp") || !j["uid"].is_number_unsigned() || !j["gid"].is_number_unsigned() ||
      !j["dir"].is_string() || !j["temp"].is_string()) {
    return bad();
  }
  PendingWrite w{j["uid"].get<uid_t>(), j["gid"].get<gid_t>(), j["dir"].get<std::string>(),
                 j["temp"].get<std::string>()};
  // A name in its directory, as Open made it: never a path.
  if (w.temp.empty() || w.temp.find('/') != std::string::npos || !w.temp.starts_with('.'))
    return bad();
  return w;
}

// As the writer: the directory beneath the export as they could reach it, then the name.
// Whether there was one to remove.
Result<bool> remove_temp(int export_root, const PendingWrite& w) {
  auto as_writer = FsIdentity::assume(w.uid, w.gid);
  if (!as_writer) return std::unexpected(as_writer.error());
  const UniqueFd dir(LOOM_TRY(open_beneath(export_root, w.dir, O_PATH | O_DIRECTORY)));
  if (::unlinkat(dir.get(), w.temp.c_str(), 0) == 0) return true;
  if (errno == ENOENT) return false;  // cut short before it was made
  return make_error(
      ErrorCode::kPermissionDenied,
      fmt::format("removing {}: {}", (w.dir / w.temp).string(), loom::errno_text(errno)));
}

}  // namespace

std::size_t WriteJournal::sweep(int export_root) const {
  std::size_t removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir_, ec)) {
    const fs::path& file = entry.path();
    auto write = read_record(file);
    if (!write) {
      spdlog::warn("storage: {}; removed", write.error().to_string());
    } else if (auto gone = remove_temp(export_root, *write); !gone) {
      spdlog::warn("storage: a write cut short left {} in {}: {}", write->temp, write->dir.string(),
                   gone.error().to_string());
    } else {
      removed += *gone ? 1 : 0;
    }
    end(file.filename().string());
  }
  return removed;
}

}  // namespace loom::burstbuffer
