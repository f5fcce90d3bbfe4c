// The attack of issue 19 end to end: a job on a node that has just staged (its agent's
// libfabric endpoint open) lists its own descriptors, and finds none of loomd's.
#include <regex>
#include <set>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

class JobDescriptorsTest : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
};

TEST_F(JobDescriptorsTest, AJobAfterAStagingOnItsNodeHoldsOnlyItsOwnDescriptors) {
  const std::filesystem::path storage = storage_with_results();
  std::ofstream(storage / "in.bin") << "input";
  // `; true`: sh forks ls, so the listing is the shell's own, as the agent started it.
  const std::uint64_t id = submit({"submit", "--bb", "8M", "--stage-in", "storage:/in.bin", "-o",
                                   "fds-%j", "--", "/bin/sh", "-c", "ls -l /proc/$$/fd; true"});
  const nlohmann::json job = finish(std::to_string(id));
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump();
  const std::string listing = read("fds-" + std::to_string(id));
  std::set<int> fds;
  const std::regex line(R"((\d+) -> )");
  for (auto it = std::sregex_iterator(listing.begin(), listing.end(), line);
       it != std::sregex_iterator(); ++it) {
    fds.insert(std::stoi((*it)[1]));
  }
  EXPECT_EQ(fds, (std::set<int>{0, 1, 2})) << listing;
}

}  // namespace
}  // namespace loom::testing
