// A user who made the agent's /dev/shm base directory first failed every MPI job of the
// node (issue 19). The agent makes it at start, root's, and refuses to start on one that is
// somebody else's, naming it and its owner, before any job could use it. (That agents make
// theirs at start is what every MPI test's cluster relies on.)
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "run.hpp"
#include "temp.hpp"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;

TEST(ShmBase, TheAgentRefusesToStartOnABaseAnotherUserMade) {
  const passwd* bob = ::getpwnam("loom-bob");
  ASSERT_NE(bob, nullptr) << "scripts/install-deps.sh creates loom-bob";
  const fs::path shm = temp_path("shm");
  fs::create_directories(shm);
  fs::permissions(shm, fs::perms::all | fs::perms::sticky_bit);  // as /dev/shm is
  const fs::path base = shm / "loom";
  ASSERT_EQ(run({"runuser", "-u", "loom-bob", "--", "mkdir", base.string()}).exit_code, 0);
  const fs::path state = temp_path("agent-state");
  // Bounded: an agent that started would wait for its controller for good.
  const Completed agent =
      run({"timeout", "30", built("agent/loomd"), "--shm-dir", base.string(), "--state-dir",
           state.string(), "--controller", "127.0.0.1:1", "--name", "shm-test"});
  EXPECT_NE(agent.exit_code, 0);
  EXPECT_NE(agent.exit_code, 124) << "it started, and waited for its controller";
  EXPECT_NE(agent.err.find(fmt::format("agent.shm_dir {} is a directory of uid {}", base.string(),
                                       bob->pw_uid)),
            std::string::npos)
      << agent.err;
  fs::remove_all(shm);
  fs::remove_all(state);
}

}  // namespace
}  // namespace loom::testing
