#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "run.hpp"
#include "temp.hpp"

namespace loom {
namespace {

using loom::testing::built;
using loom::testing::lines;
using loom::testing::run;
using nlohmann::json;

TEST(LoomTopo, JsonHasWhatAgentsAndScriptsRead) {
  auto done = run({built("cli/loom"), "topo", "--json", "--xml",
                   LOOM_SHARED_DIR "/topologies/32em64t-2n8c2t-pci-wholeio.xml"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  EXPECT_EQ(j["packages"], 2);
  EXPECT_EQ(j["cores"], 16);
  EXPECT_EQ(j["pus"], 32);
  ASSERT_EQ(j["numa_domains"].size(), 2u);
  for (const char* key :
       {"os_index", "memory_bytes", "cores", "pus", "block_devices", "network_devices"}) {
    EXPECT_TRUE(j["numa_domains"][0].contains(key)) << key;
  }
  EXPECT_EQ(j["numa_domains"][1]["network_devices"], json({"eth0", "eth1", "ib0", "mlx5_0"}));
}

// A node whose cgroup hides package 1's memory (allowed_nodeset P#0 only) loads, and the
// summary says where those cores' memory comes from.
TEST(LoomTopo, ANodeWithAHiddenNumaNodeLoadsAndSaysSo) {
  std::ifstream in(LOOM_SHARED_DIR "/topologies/24em64t-2n6c2t-pci.xml");
  std::stringstream text;
  text << in.rdbuf();
  std::string xml = text.str();
  const std::string nodes = "allowed_nodeset=\"0x00000003\"";
  ASSERT_NE(xml.find(nodes), std::string::npos);
  xml.replace(xml.find(nodes), nodes.size(), "allowed_nodeset=\"0x00000001\"");
  const auto file = loom::testing::temp_path("hidden-numa.xml");
  std::ofstream(file) << xml;
  auto done = run({built("cli/loom"), "topo", "--xml", file.string()});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_NE(done.out.find("1 NUMA domains, 12 cores"), std::string::npos) << done.out;
  EXPECT_NE(done.out.find("note: NUMA P#1 is not allowed here: the memory of its cores (L#6-11) "
                          "comes from P#0"),
            std::string::npos)
      << done.out;
}

TEST(LoomTopo, TheSummaryShowsEachDomain) {
  auto done =
      run({built("cli/loom"), "topo", "--synthetic", "pack:2 numa:2(memory=64GiB) core:16 pu:2"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  auto out = lines(done.out);
  ASSERT_EQ(out.size(), 6u) << done.out;  // a headline, a header and four domains
  EXPECT_NE(out[0].find("2 packages, 4 NUMA domains, 64 cores, 128 PUs, 256 GiB memory"),
            std::string::npos)
      << out[0];
  EXPECT_NE(out[5].find("48-63"), std::string::npos) << out[5];
  EXPECT_NE(out[5].find("64 GiB"), std::string::npos) << out[5];
}

TEST(LoomTopo, TheLiveMachineLoads) {
  auto done = run({built("cli/loom"), "topo", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  EXPECT_EQ(j["source"], "live");
  EXPECT_GE(j["cores"].get<int>(), 1);
}

TEST(LoomTopo, BadSourcesGetOneLineAndExitOne) {
  auto missing = run({built("cli/loom"), "topo", "--xml", "/nonexistent.xml"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "loom: topology XML /nonexistent.xml: no such file\n");
  auto bad = run({built("cli/loom"), "topo", "--synthetic", "pack:x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(lines(bad.err).size(), 1u);
  EXPECT_NE(bad.err.find("invalid synthetic topology \"pack:x\""), std::string::npos) << bad.err;
  auto both = run({built("cli/loom"), "topo", "--xml", "a.xml", "--synthetic", "pack:1"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_EQ(lines(both.err).size(), 1u) << both.err;
}

TEST(LoomCli, UsageErrorsExitTwoWithOneLine) {
  auto unknown_option = run({built("cli/loom"), "topo", "--frobnicate"});
  EXPECT_EQ(unknown_option.exit_code, 2);
  EXPECT_EQ(lines(unknown_option.err).size(), 1u) << unknown_option.err;
  EXPECT_NE(unknown_option.err.find("--frobnicate"), std::string::npos) << unknown_option.err;
  auto unknown_command = run({built("cli/loom"), "frobnicate"});
  EXPECT_EQ(unknown_command.exit_code, 2);
  EXPECT_EQ(unknown_command.err, "loom: unknown command 'frobnicate' (see loom --help)\n");
}

TEST(LoomCli, HelpListsTheSubcommands) {
  auto help = run({built("cli/loom"), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"topo", "bind", "config", "sim", "fabric"}) {
    EXPECT_NE(help.out.find(std::string("\n  ") + command + " "), std::string::npos) << command;
  }
}

}  // namespace
}  // namespace loom
