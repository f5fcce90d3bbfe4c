#include "loom/hwtopo/load.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "run.hpp"
#include "temp.hpp"
#include "topologies.hpp"

namespace loom::hwtopo {
namespace {

using loom::testing::run;

// What hwloc's own tool counts: hwloc-calc --input SOURCE -N TYPE machine:0
unsigned hwloc_calc_count(const std::string& input, const std::string& type) {
  auto done = run({"hwloc-calc", "--input", input, "-N", type, "machine:0"});
  EXPECT_EQ(done.exit_code, 0) << done.err;
  return static_cast<unsigned>(std::stoul(done.out));
}

void expect_counts_match_hwloc_calc(const Topology& t, const std::string& input) {
  EXPECT_EQ(t.cores.size(), hwloc_calc_count(input, "core")) << input;
  EXPECT_EQ(t.pu_count(), hwloc_calc_count(input, "pu")) << input;
  EXPECT_EQ(t.numa_domains.size(), hwloc_calc_count(input, "numa")) << input;
  EXPECT_EQ(t.packages, hwloc_calc_count(input, "package")) << input;
}

// Structural facts every loaded topology must have, whatever its source.
void expect_well_formed(const Topology& t) {
  for (std::size_t i = 0; i < t.cores.size(); ++i) {
    EXPECT_EQ(t.cores[i].logical_index, i);
    EXPECT_FALSE(t.cores[i].pus.empty());
    const NumaDomain* home = t.find_numa(t.cores[i].numa);
    ASSERT_NE(home, nullptr);
    EXPECT_TRUE(std::ranges::binary_search(home->cores, i));
  }
  std::size_t cores_in_domains = 0;
  for (const NumaDomain& d : t.numa_domains) cores_in_domains += d.cores.size();
  EXPECT_EQ(cores_in_domains, t.cores.size());
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::filesystem::path write_temp(const std::string& name, const std::string& text) {
  auto path = loom::testing::temp_path(name);
  std::ofstream(path) << text;
  return path;
}

// The shared XML `name`, with the machine's allowed cpuset and nodeset narrowed as a
// cgroup or a Slurm allocation narrows them on a real node.
std::filesystem::path narrowed(const std::string& name, const std::string& cpus,
                               const std::string& nodes, const std::string& old_cpus,
                               const std::string& old_nodes) {
  std::string text = read_file(std::string(LOOM_SHARED_DIR "/topologies/") + name);
  auto replace = [&](const std::string& from, const std::string& to) {
    const std::size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
  };
  replace("allowed_cpuset=\"" + old_cpus + "\"", "allowed_cpuset=\"" + cpus + "\"");
  replace("allowed_nodeset=\"" + old_nodes + "\"", "allowed_nodeset=\"" + nodes + "\"");
  return write_temp("narrowed.xml", text);
}

// 24em64t: package 0 holds NUMA P#0 and the even PUs, package 1 NUMA P#1 and the odd ones.
TEST(LoadXml, AWholeNumaNodeHiddenIsLeftOut) {
  auto t = load_xml(
      narrowed("24em64t-2n6c2t-pci.xml", "0x00555555", "0x00000001", "0x00ffffff", "0x00000003"));
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  expect_well_formed(*t);
  ASSERT_EQ(t->numa_domains.size(), 1u);
  EXPECT_EQ(t->numa_domains[0].os_index, 0u);
  EXPECT_EQ(t->cores.size(), 6u);
  EXPECT_TRUE(t->notes.empty());
}

TEST(LoadXml, PartOfANumaNodeHiddenLeavesTheRestOfIt) {
  // Core L#6 (PUs P#1 and P#13), the first of package 1, is outside the cpuset.
  auto t = load_xml(
      narrowed("24em64t-2n6c2t-pci.xml", "0x00ffdffd", "0x00000003", "0x00ffffff", "0x00000003"));
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  expect_well_formed(*t);
  ASSERT_EQ(t->numa_domains.size(), 2u);
  EXPECT_EQ(t->cores.size(), 11u);
  EXPECT_EQ(t->numa_domains[1].cores.size(), 5u);
  EXPECT_EQ(t->pu_count(), 22u);
  EXPECT_TRUE(t->notes.empty());
}

// The cores of package 1 without its memory: they load, their memory from P#0, and say so.
TEST(LoadXml, CoresWhoseNumaNodeIsHiddenTakeAnAllowedOneAndANoteSaysWhich) {
  const auto file =
      narrowed("24em64t-2n6c2t-pci.xml", "0x00ffffff", "0x00000001", "0x00ffffff", "0x00000003");
  auto t = load_xml(file);
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  expect_well_formed(*t);
  ASSERT_EQ(t->numa_domains.size(), 1u);
  EXPECT_EQ(t->cores.size(), 12u);
  for (const Core& c : t->cores) EXPECT_EQ(c.numa, 0u) << "core L#" << c.logical_index;
  ASSERT_EQ(t->notes.size(), 1u);
  EXPECT_NE(t->notes[0].find("NUMA P#1 is not allowed here"), std::string::npos) << t->notes[0];
  EXPECT_NE(t->notes[0].find("(L#6-11) comes from P#0"), std::string::npos) << t->notes[0];
}

// 16amd64: eight packages of one NUMA node each, so no package can stand in; the firmware's
// latencies (edited: from P#1, P#5 is nearest) choose.
TEST(LoadXml, AHiddenNodesCoresTakeTheNearestAllowedNodeByLatency) {
  std::string text = read_file(LOOM_SHARED_DIR "/topologies/16amd64-4distances.xml");
  // The NUMALatency matrix, in the order of its indexes (1 0 2 5 4 3 6 7): row 0 is P#1's.
  const std::string row0 = "<u64values length=\"30\">10 20 20 20 20 20 20 20 20 10 </u64values>";
  const std::size_t at = text.find(row0);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, row0.size(),
               "<u64values length=\"30\">10 40 40 15 40 40 40 40 20 10 </u64values>");
  const std::string nodes = "allowed_nodeset=\"0x000000ff\"";
  text.replace(text.find(nodes), nodes.size(), "allowed_nodeset=\"0x000000fd\"");
  auto t = load_xml(write_temp("latency.xml", text));
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  expect_well_formed(*t);
  EXPECT_EQ(t->numa_domains.size(), 7u);
  EXPECT_EQ(t->cores.size(), 16u);
  ASSERT_EQ(t->notes.size(), 1u);
  EXPECT_NE(t->notes[0].find("comes from P#5, the nearest by hwloc's latencies"), std::string::npos)
      << t->notes[0];
}

TEST(LoadXml, EverySharedTopologyMatchesHwlocCalc) {
  auto files = loom::testing::shared_topology_files();
  ASSERT_EQ(files.size(), 3u);
  for (const auto& file : files) {
    auto t = load_xml(file);
    ASSERT_TRUE(t.has_value()) << file << ": " << t.error().to_string();
    expect_counts_match_hwloc_calc(*t, file.string());
    expect_well_formed(*t);
    EXPECT_EQ(t->source, "xml:" + file.string());
  }
}

TEST(LoadXml, DevicesAreLocalToTheirDomain) {
  auto t = load_xml(LOOM_SHARED_DIR "/topologies/32em64t-2n8c2t-pci-wholeio.xml");
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  ASSERT_EQ(t->block_devices.size(), 1u);
  EXPECT_EQ(t->block_devices[0].name, "sda");
  EXPECT_FALSE(t->block_devices[0].nvme);
  EXPECT_EQ(t->block_devices[0].numa, 0u);
  std::vector<std::string> on_numa1;
  for (const auto& n : t->network_devices) {
    EXPECT_EQ(n.numa, 1u) << n.name;
    EXPECT_EQ(n.rdma, n.name == "mlx5_0") << n.name;
    on_numa1.push_back(n.name);
  }
  EXPECT_EQ(on_numa1, (std::vector<std::string>{"eth0", "eth1", "ib0", "mlx5_0"}));
  // Each domain of this two-socket machine has its package's 8 cores and their 16 PUs.
  ASSERT_EQ(t->numa_domains.size(), 2u);
  EXPECT_EQ(t->numa_domains[1].cores, (std::vector<unsigned>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(t->numa_domains[1].pus.size(), 16u);
  EXPECT_EQ(t->numa_domains[1].package, 1u);
}

TEST(LoadXml, NumaDistancesComeFromTheFirmwareTable) {
  auto t = load_xml(LOOM_SHARED_DIR "/topologies/16amd64-4distances.xml");
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  ASSERT_EQ(t->distances.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(t->distances[i].size(), 8u);
    EXPECT_EQ(t->distances[i][i], 10u);  // local latency, as the SLIT writes it
    for (std::size_t j = 0; j < 8; ++j) EXPECT_EQ(t->distances[i][j], t->distances[j][i]);
  }
  // Compare with hwloc's own table, printed by OS index (-p) in hwloc's logical order.
  auto done = run({"lstopo-no-graphics", "-p", "--input",
                   LOOM_SHARED_DIR "/topologies/16amd64-4distances.xml", "--distances"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  std::istringstream text(done.out);
  std::string line;
  while (std::getline(text, line) && line.find("NUMALatency") == std::string::npos) {
  }
  std::getline(text, line);
  std::istringstream header(line);
  std::string word;
  header >> word;  // "index"
  std::vector<unsigned> columns;
  for (unsigned os; header >> os;) columns.push_back(os);
  ASSERT_EQ(columns.size(), 8u) << line;
  auto position = [&](unsigned os) {
    for (std::size_t k = 0; k < t->numa_domains.size(); ++k) {
      if (t->numa_domains[k].os_index == os) return k;
    }
    ADD_FAILURE() << "no domain " << os;
    return std::size_t{0};
  };
  for (std::size_t row = 0; row < 8 && std::getline(text, line); ++row) {
    std::istringstream cells(line);
    unsigned os = 0;
    cells >> os;
    for (unsigned col : columns) {
      std::uint64_t value = 0;
      cells >> value;
      EXPECT_EQ(t->distances[position(os)][position(col)], value) << os << "->" << col;
    }
  }
}

TEST(LoadSynthetic, MatchesHwlocCalc) {
  for (const std::string& spec : loom::testing::synthetic_descriptions()) {
    auto t = load_synthetic(spec);
    ASSERT_TRUE(t.has_value()) << spec << ": " << t.error().to_string();
    expect_counts_match_hwloc_calc(*t, spec);
    expect_well_formed(*t);
  }
}

TEST(LoadSynthetic, SubNumaClusteringGivesTwoDomainsPerPackage) {
  auto t = load_synthetic("pack:2 numa:2 core:16 pu:2");
  ASSERT_TRUE(t.has_value());
  ASSERT_EQ(t->numa_domains.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(t->numa_domains[i].cores.size(), 16u);
    EXPECT_EQ(t->numa_domains[i].pus.size(), 32u);
    EXPECT_EQ(t->numa_domains[i].package, static_cast<unsigned>(i / 2));
  }
}

TEST(LoadSynthetic, MemorySizes) {
  // hwloc 2.9 gives a domain without a size 1 GiB; GB is decimal, GiB binary.
  auto plain = load_synthetic("pack:1 numa:2 core:2 pu:1");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->numa_domains[0].memory_bytes, 1ull << 30);
  auto decimal = load_synthetic("pack:1 numa:2(memory=64GB) core:2 pu:1");
  ASSERT_TRUE(decimal.has_value());
  EXPECT_EQ(decimal->numa_domains[1].memory_bytes, 64'000'000'000ull);
  auto binary = load_synthetic("pack:1 numa:2(memory=64GiB) core:2 pu:1");
  ASSERT_TRUE(binary.has_value());
  EXPECT_EQ(binary->memory_bytes(), 128ull << 30);
}

TEST(LoadSynthetic, MemoryOnlyDomainsAreModelledNotFolded) {
  auto t = load_synthetic("pack:2 [numa(memory=64GiB)] [numa(memory=16GiB)] core:4 pu:2");
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  ASSERT_EQ(t->numa_domains.size(), 4u);
  EXPECT_FALSE(t->numa_domains[0].memory_only());
  EXPECT_EQ(t->numa_domains[0].cores, (std::vector<unsigned>{0, 1, 2, 3}));
  EXPECT_TRUE(t->numa_domains[1].memory_only());
  EXPECT_EQ(t->numa_domains[1].memory_bytes, 16ull << 30);
  EXPECT_EQ(t->numa_domains[1].near, (std::vector<unsigned>{0}));
  EXPECT_EQ(t->numa_domains[3].near, (std::vector<unsigned>{2}));
  EXPECT_EQ(t->numa_domains[3].package, 1u);
}

// An hwloc export of a synthetic machine, edited as a real one would differ.
std::string exported_xml(const std::string& spec) {
  auto path = loom::testing::temp_path("exported.xml");
  auto done = run({"lstopo-no-graphics", "--input", spec, "--of", "xml", "-f", path.string()});
  EXPECT_EQ(done.exit_code, 0) << done.err;
  return read_file(path);
}

TEST(LoadXml, DramIsHomeBeforeHighBandwidthMemory) {
  // KNL in hybrid mode lists MCDRAM first in some firmware; cores still call DRAM home.
  std::string xml = exported_xml("pack:1 [numa(memory=16GiB)] [numa(memory=96GiB)] core:4 pu:1");
  const std::string first_numa = R"(type="NUMANode" os_index="0")";
  ASSERT_NE(xml.find(first_numa), std::string::npos);
  xml.replace(xml.find(first_numa), first_numa.size(), first_numa + " subtype=\"MCDRAM\"");
  auto t = load_xml(write_temp("loom-knl.xml", xml));
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  ASSERT_EQ(t->numa_domains.size(), 2u);
  EXPECT_EQ(t->numa_domains[0].kind, "MCDRAM");
  EXPECT_TRUE(t->numa_domains[0].memory_only());
  EXPECT_EQ(t->numa_domains[0].near, (std::vector<unsigned>{1}));
  EXPECT_EQ(t->numa_domains[1].kind, "DRAM");
  EXPECT_EQ(t->numa_domains[1].cores.size(), 4u);
  for (const Core& c : t->cores) EXPECT_EQ(c.numa, 1u);
}

TEST(LoadXml, DisallowedPusAreNeitherUsableNorCounted) {
  // 4 cores x 2 PUs; a cgroup that allows PUs 0-5 leaves 3 cores and 6 PUs.
  std::string xml = exported_xml("pack:1 core:4 pu:2");
  std::regex allowed("allowed_cpuset=\"0x000000ff\"");
  ASSERT_TRUE(std::regex_search(xml, allowed)) << "hwloc's export changed form";
  xml = std::regex_replace(xml, allowed, "allowed_cpuset=\"0x0000003f\"");
  auto t = load_xml(write_temp("loom-disallowed.xml", xml));
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  EXPECT_EQ(t->cores.size(), 3u);
  EXPECT_EQ(t->pu_count(), 6u);
  EXPECT_EQ(t->numa_domains[0].pus, (std::vector<unsigned>{0, 1, 2, 3, 4, 5}));
}

TEST(LoadLive, SeesExactlyTheCpusThisProcessMayUse) {
  auto t = load_live();
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  EXPECT_EQ(t->pu_count(), static_cast<std::size_t>(CPU_COUNT(&allowed)));
  for (const Core& c : t->cores) {
    for (unsigned pu : c.pus) EXPECT_TRUE(CPU_ISSET(pu, &allowed)) << "PU " << pu;
  }
  EXPECT_GE(t->numa_domains.size(), 1u);
  EXPECT_GT(t->memory_bytes(), 0u);
  expect_well_formed(*t);
}

TEST(LoadErrors, AMissingFileIsNamed) {
  auto t = load_xml("/nonexistent/node.xml");
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(t.error().to_string(), "topology XML /nonexistent/node.xml: no such file");
}

TEST(LoadErrors, MalformedXmlIsNamed) {
  for (const std::string& text :
       {std::string("<topology><object type=\"Machine\""), std::string("not xml at all"),
        std::string("<?xml version=\"1.0\"?><root/>")}) {
    auto path = write_temp("loom-malformed.xml", text);
    auto t = load_xml(path);
    ASSERT_FALSE(t.has_value()) << text;
    EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(t.error().to_string(),
              "topology XML " + path.string() +
                  " is malformed or not an hwloc export (`lstopo --of xml` writes one)");
    std::filesystem::remove(path);
  }
}

TEST(LoadErrors, ABadSyntheticStringIsQuoted) {
  for (std::string spec : {"pack:2 bogus:3 pu:1", "pack:two core:2", ""}) {
    auto t = load_synthetic(spec);
    ASSERT_FALSE(t.has_value()) << spec;
    EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(t.error().message().find("\"" + spec + "\""), std::string::npos)
        << t.error().message();
  }
}

}  // namespace
}  // namespace loom::hwtopo
