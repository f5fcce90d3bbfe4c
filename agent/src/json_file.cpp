#include "json_file.hpp"

#include <fmt/format.h>

#include <fstream>

namespace loom::agent {

namespace fs = std::filesystem;

Status write_json_file(const fs::path& target, const nlohmann::json& json) {
  const fs::path temp = target.string() + ".tmp";
  {
    std::ofstream out(temp);
    out << json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out.flush();
    if (!out)
      return make_error(ErrorCode::kInternal, fmt::format("cannot write {}", temp.string()));
  }
  std::error_code ec;
  fs::permissions(temp, fs::perms::owner_read | fs::perms::owner_write, ec);
  fs::rename(temp, target, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot save {}: {}", target.string(), ec.message()));
  }
  return {};
}

}  // namespace loom::agent
