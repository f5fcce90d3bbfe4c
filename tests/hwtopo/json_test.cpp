#include "loom/hwtopo/json.hpp"

#include <gtest/gtest.h>

#include "loom/hwtopo/load.hpp"
#include "topologies.hpp"

namespace loom::hwtopo {
namespace {

using nlohmann::json;

std::vector<Topology> every_topology() {
  std::vector<Topology> out;
  for (const auto& file : loom::testing::shared_topology_files())
    out.push_back(load_xml(file).value());
  for (const auto& spec : loom::testing::synthetic_descriptions())
    out.push_back(load_synthetic(spec).value());
  out.push_back(load_live().value());
  return out;
}

TEST(TopologyJson, RoundTripsExactly) {
  for (const Topology& t : every_topology()) {
    json written = to_json(t);
    auto read = topology_from_json(json::parse(written.dump()));
    ASSERT_TRUE(read.has_value()) << t.source << ": " << read.error().to_string();
    EXPECT_EQ(*read, t) << t.source;
    EXPECT_EQ(to_json(*read), written) << t.source;
  }
}

TEST(TopologyJson, HasTheDocumentedTopLevel) {
  auto t = load_xml(LOOM_SHARED_DIR "/topologies/24em64t-2n6c2t-pci.xml");
  ASSERT_TRUE(t.has_value());
  json j = to_json(*t);
  EXPECT_EQ(j["packages"], 2);
  EXPECT_EQ(j["cores"], 12);
  EXPECT_EQ(j["pus"], 24);
  ASSERT_EQ(j["numa_domains"].size(), 2u);
  const json& d0 = j["numa_domains"][0];
  EXPECT_EQ(d0["os_index"], 0);
  EXPECT_EQ(d0["cores"], json({0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(d0["pus"].size(), 12u);
  EXPECT_TRUE(d0["memory_bytes"].is_number_unsigned());
  EXPECT_EQ(d0["block_devices"], json({"sda"}));
  EXPECT_EQ(d0["network_devices"], json({"eth0", "eth1", "eth2", "ib0", "mlx4_0"}));
}

class BadTopologyJson : public ::testing::Test {
 protected:
  json valid_ = to_json(load_synthetic("pack:2 numa:1 core:2 pu:2").value());

  std::string error_of(const json& j) {
    auto t = topology_from_json(j);
    EXPECT_FALSE(t.has_value());
    if (t) return "";
    EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
    return t.error().message();
  }
};

TEST_F(BadTopologyJson, AMissingFieldIsNamedByItsPath) {
  json j = valid_;
  j["numa_domains"][1].erase("memory_bytes");
  EXPECT_EQ(error_of(j), "topology JSON: 'numa_domains[1].memory_bytes' is missing");
  j = valid_;
  j.erase("core_map");
  EXPECT_EQ(error_of(j), "topology JSON: 'core_map' is missing");
}

TEST_F(BadTopologyJson, AWrongTypeIsNamed) {
  json j = valid_;
  j["core_map"][2]["pus"][0] = "4";
  EXPECT_EQ(error_of(j),
            "topology JSON: 'core_map[2].pus[0]' must be an unsigned integer, got \"4\"");
  j = valid_;
  j["numa_domains"][0]["os_index"] = -1;
  EXPECT_EQ(error_of(j),
            "topology JSON: 'numa_domains[0].os_index' must be an unsigned integer, got -1");
  EXPECT_EQ(error_of(json::array()), "topology JSON: '(top level)' must be an object");
}

TEST_F(BadTopologyJson, InconsistentPartsAreRefused) {
  json j = valid_;
  j["cores"] = 5;
  EXPECT_EQ(error_of(j), "topology JSON: 'cores' says 5 but core_map lists 4");
  j = valid_;
  j["numa_domains"][0]["cores"] = json::array({0});  // core 1 now belongs to no domain
  EXPECT_EQ(error_of(j), "topology JSON: 'core_map[1]' core 1 is in no NUMA domain's cores");
  j = valid_;
  j["numa_domains"][1]["cores"] = json({1, 2, 3});
  EXPECT_EQ(error_of(j), "topology JSON: 'numa_domains' list core 1 in two domains");
  j = valid_;
  j["core_map"][3]["pus"] = json::array({0});
  EXPECT_EQ(error_of(j), "topology JSON: 'core_map[3].pus' repeats PU 0");
  j = valid_;
  j["numa_domains"][0]["pus"] = json({0, 1});
  EXPECT_EQ(error_of(j),
            "topology JSON: 'numa_domains[0].pus' differs from the PUs of the domain's cores in "
            "core_map");
  j = valid_;
  j["block_devices"] = json::array(
      {{{"name", "nvme0n1"}, {"nvme", true}, {"numa", 7}, {"capacity_bytes", nullptr}}});
  EXPECT_EQ(error_of(j),
            "topology JSON: 'block_devices[0].numa' names domain 7, which does not exist");
  j = valid_;
  j["distances"] = json::array({json::array({10, 20})});
  EXPECT_EQ(error_of(j), "topology JSON: 'distances' must have one row per NUMA domain (2)");
}

}  // namespace
}  // namespace loom::hwtopo
