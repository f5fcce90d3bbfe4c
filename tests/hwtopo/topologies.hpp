// The topologies every hwtopo test runs on: hwloc's real-machine XML exports in
// ../shared/topologies/ and a set of synthetic descriptions.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace loom::testing {

inline std::vector<std::filesystem::path> shared_topology_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(LOOM_SHARED_DIR "/topologies")) {
    if (entry.path().extension() == ".xml") files.push_back(entry.path());
  }
  std::ranges::sort(files);
  return files;
}

inline const std::vector<std::string>& synthetic_descriptions() {
  static const std::vector<std::string> kSpecs = {
      "pack:2 numa:2 core:16 pu:2",
      "pack:2 numa:2(memory=64GiB) core:32 pu:1",
      "pack:1 core:4 pu:2",
      "pack:4 l3:2 core:6 pu:2",
      "pack:2 [numa(memory=64GiB)] [numa(memory=16GiB)] core:4 pu:2",  // KNL-like HBM beside DRAM
  };
  return kSpecs;
}

}  // namespace loom::testing
