#include "cgroup_files.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include "loom/common/errno_text.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::agent::cgroup_files {

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Status write(const std::filesystem::path& path, std::string_view value) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  const bool written =
      fd && ::write(fd.get(), value.data(), value.size()) == static_cast<ssize_t>(value.size());
  const int error = errno;
  if (!written) {
    return make_error(ErrorCode::kInternal, fmt::format("cannot write \"{}\" to {}: {}", value,
                                                        path.string(), loom::errno_text(error)));
  }
  return {};
}

std::vector<std::string> words(const std::filesystem::path& path) {
  std::istringstream in(read(path));
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

std::optional<std::uint64_t> keyed(const std::filesystem::path& path, std::string_view key) {
  std::ifstream in(path);
  for (std::string name, value; in >> name >> value;) {
    if (name != key) continue;
    std::uint64_t number = 0;
    if (std::from_chars(value.data(), value.data() + value.size(), number).ec != std::errc())
      return std::nullopt;
    return number;
  }
  return std::nullopt;
}

Status make_dir(const std::filesystem::path& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return make_error(ErrorCode::kInternal, fmt::format("cannot create cgroup {}: {}",
                                                        path.string(), loom::errno_text(errno)));
  }
  return {};
}

}  // namespace loom::agent::cgroup_files
