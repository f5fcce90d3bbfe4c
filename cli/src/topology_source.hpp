// --xml FILE | --synthetic SPEC, shared by the subcommands that take a topology.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "loom/common/error.hpp"
#include "loom/hwtopo/load.hpp"

namespace loom::cli {

struct TopologySource {
  std::optional<std::filesystem::path> xml;
  std::optional<std::string> synthetic;

  bool is_live() const { return !xml && !synthetic; }
  Result<hwtopo::Topology> load() const {
    if (xml) return hwtopo::load_xml(*xml);
    if (synthetic) return hwtopo::load_synthetic(*synthetic);
    return hwtopo::load_live();
  }
};

inline std::shared_ptr<TopologySource> add_topology_source_options(CLI::App& command) {
  auto source = std::make_shared<TopologySource>();
  auto* xml = command.add_option("--xml", source->xml, "An hwloc XML topology (lstopo --of xml)");
  auto* synthetic = command.add_option(
      "--synthetic", source->synthetic,
      "An hwloc synthetic topology, e.g. \"pack:2 numa:2(memory=64GiB) core:16 pu:2\"");
  xml->excludes(synthetic);
  return source;
}

}  // namespace loom::cli
