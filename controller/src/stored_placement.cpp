#include "stored_placement.hpp"

#include <nlohmann/json.hpp>

namespace loom::controller::detail {

std::string placement_to_json(const v1::Placement& placement) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const v1::PlacedNode& node : placement.nodes()) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const v1::PlacedRank& r : node.ranks()) {
      nlohmann::json rank = {{"rank", r.rank()},
                             {"cores", r.cores()},
                             {"numa", r.numa()},
                             {"memory_bytes", r.memory_bytes()}};
      if (r.has_bound()) {
        rank["bound_cpus"] = r.bound().cpus();
        rank["bound_numa"] = r.bound().numa();
      }
      ranks.push_back(std::move(rank));
    }
    nodes.push_back(
        {{"node", node.node()},
         {"ranks", std::move(ranks)},
         {"nvme", node.nvme().empty() ? nlohmann::json(nullptr) : nlohmann::json(node.nvme())},
         {"bb_bytes", node.bb_bytes()},
         {"exclusive", node.exclusive()}});
  }
  return nodes.dump();
}

Result<v1::Placement> placement_from_json(std::string_view text) {
  v1::Placement placement;
  if (text.empty()) return placement;
  try {
    for (const nlohmann::json& node : nlohmann::json::parse(text)) {
      v1::PlacedNode& placed = *placement.add_nodes();
      placed.set_node(node.at("node").get<std::string>());
      for (const nlohmann::json& r : node.at("ranks")) {
        v1::PlacedRank& rank = *placed.add_ranks();
        rank.set_rank(r.at("rank").get<std::uint32_t>());
        for (unsigned core : r.at("cores")) rank.add_cores(core);
        rank.set_numa(r.at("numa").get<std::uint32_t>());
        rank.set_memory_bytes(r.at("memory_bytes").get<std::uint64_t>());
        if (r.contains("bound_cpus")) {
          v1::RankBinding& bound = *rank.mutable_bound();
          bound.set_rank(rank.rank());
          for (unsigned cpu : r.at("bound_cpus")) bound.add_cpus(cpu);
          for (unsigned numa : r.at("bound_numa")) bound.add_numa(numa);
        }
      }
      if (!node.at("nvme").is_null()) placed.set_nvme(node.at("nvme").get<std::string>());
      placed.set_bb_bytes(node.at("bb_bytes").get<std::uint64_t>());
      placed.set_exclusive(node.at("exclusive").get<bool>());
    }
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorCode::kDataLoss, std::string("its stored placement: ") + e.what());
  }
  return placement;
}

}  // namespace loom::controller::detail
