// An argv or envp for exec and posix_spawn: pointers into `words` (which must outlive the
// call), then the null pointer that ends the list. exec does not write through them.
#pragma once

#include <string>
#include <vector>

namespace loom {

inline std::vector<char*> exec_args(const std::vector<std::string>& words) {
  std::vector<char*> out;
  out.reserve(words.size() + 1);
  for (const std::string& word : words) out.push_back(const_cast<char*>(word.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace loom
