// Reading and writing cgroup files: small text files the kernel makes, whose writes fail
// with the reason in errno.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::agent::cgroup_files {

// The file's text without its trailing newline; empty when it cannot be read.
std::string read(const std::filesystem::path& path);
// Writes value in one write(2), as the kernel wants it; the error names the file.
Status write(const std::filesystem::path& path, std::string_view value);
// The whitespace-separated words of a file ("cpuset memory pids").
std::vector<std::string> words(const std::filesystem::path& path);
// The value of `key` in a flat keyed file ("oom_kill 0\n...", "populated 1\n...").
std::optional<std::uint64_t> keyed(const std::filesystem::path& path, std::string_view key);
// Makes a directory (0755) where there is none; the error names it.
Status make_dir(const std::filesystem::path& path);

}  // namespace loom::agent::cgroup_files
