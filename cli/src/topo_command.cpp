// loom topo [--xml FILE | --synthetic SPEC] [--json]: a node's topology as Loom sees it.
#include <fmt/format.h>

#include <iostream>
#include <optional>

#include "commands.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/index_list.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "topology_source.hpp"

namespace loom::cli {

namespace {

std::string names_near(const auto& devices, unsigned numa) {
  std::string out;
  for (const auto& device : devices) {
    if (device.numa != numa) continue;
    if (!out.empty()) out += ",";
    out += device.name;
  }
  return out.empty() ? "-" : out;
}

void print_summary(const hwtopo::Topology& t) {
  std::cout << fmt::format("{}: {} packages, {} NUMA domains, {} cores, {} PUs, {} memory\n",
                           t.source, t.packages, t.numa_domains.size(), t.cores.size(),
                           t.pu_count(), format_bytes(Bytes(t.memory_bytes())));
  std::cout << fmt::format("{:<5} {:<7} {:<8} {:<12} {:<16} {:>10}  {:<14} {}\n", "NUMA", "kind",
                           "package", "cores", "PUs", "memory", "block", "network");
  for (const hwtopo::NumaDomain& d : t.numa_domains) {
    std::string cores = d.memory_only() ? fmt::format("(near {})", format_index_list(d.near))
                                        : format_index_list(d.cores);
    std::cout << fmt::format(
        "{:<5} {:<7} {:<8} {:<12} {:<16} {:>10}  {:<14} {}\n", d.os_index, d.kind,
        d.package ? std::to_string(*d.package) : "-", cores,
        d.memory_only() ? "-" : format_index_list(d.pus), format_bytes(Bytes(d.memory_bytes)),
        names_near(t.block_devices, d.os_index), names_near(t.network_devices, d.os_index));
  }
  std::vector<std::string> unattached;
  for (const auto& b : t.block_devices) {
    if (!b.numa) unattached.push_back(b.name);
  }
  for (const auto& n : t.network_devices) {
    if (!n.numa) unattached.push_back(n.name);
  }
  if (!unattached.empty()) {
    std::cout << fmt::format("devices local to no single domain: {}\n", fmt::join(unattached, ","));
  }
  for (const std::string& note : t.notes) std::cout << "note: " << note << '\n';
}

}  // namespace

Command add_topo(CLI::App& app) {
  auto* command = app.add_subcommand(
      "topo", "Show a node's packages, NUMA domains, cores and local devices (via hwloc)");
  auto source = add_topology_source_options(*command);
  auto json = std::make_shared<bool>(false);
  command->add_flag("--json", *json, "Print one JSON object (the form agents register with)");
  return {command, [source, json](const Context&) -> Status {
            hwtopo::Topology topology = LOOM_TRY(source->load());
            if (*json) {
              std::cout << hwtopo::to_json(topology).dump(2) << '\n';
            } else {
              print_summary(topology);
            }
            return {};
          }};
}

}  // namespace loom::cli
