// Loom's other programs, as one of them finds them: beside itself when installed, in their
// build folders in a build tree.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "loom/common/error.hpp"

namespace loom {

inline Result<std::filesystem::path> find_program(const std::string& name,
                                                  const std::string& build_folder) {
  namespace fs = std::filesystem;
  const fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
  for (const fs::path& candidate : {self / name, self.parent_path() / build_folder / name}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return make_error(ErrorCode::kNotFound,
                    fmt::format("cannot find {} beside {} or in {}", name, self.string(),
                                (self.parent_path() / build_folder).string()));
}

}  // namespace loom
