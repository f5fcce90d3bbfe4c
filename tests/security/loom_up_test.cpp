// `loom up` without --state-dir once used $TMPDIR/loom-up.PID, made or not: loom-bob made it
// first, and root appended its log through his symlink and mounted his ext4 image at a path
// he chose. The attack, exactly: loom-bob prepares the directory for the very pid that then
// becomes `loom up` (sh's pid, kept across exec).
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>

#include "local_cluster.hpp"
#include "loom/common/exec_args.hpp"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;

std::string contents(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(LoomUpAttack, ADirectoryAnotherUserMadeForItsPidIsNotUsed) {
  const fs::path tmp = temp_path("up-tmp");
  fs::create_directories(tmp);
  fs::permissions(tmp, fs::perms::all | fs::perms::sticky_bit);  // as /tmp is
  const fs::path victim = tmp / "root-only";
  std::ofstream(victim) << "root's\n";
  fs::permissions(victim, fs::perms::owner_read | fs::perms::owner_write);
  const fs::path output = temp_path("up-out");
  const std::string script = fmt::format(
      "d=\"$TMPDIR/loom-up.$$\"; runuser -u loom-bob -- mkdir \"$d\" && "
      "runuser -u loom-bob -- ln -s '{}' \"$d/loomctld.log\" && "
      "exec '{}' up --agents 1 --no-restart",
      victim.string(), built("cli/loom"));
  std::vector<std::string> env{"TMPDIR=" + tmp.string(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  const std::vector<char*> envp = loom::exec_args(env);
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t up = -1;
  ASSERT_EQ(::posix_spawn(&up, "/bin/sh", &actions, nullptr, const_cast<char**>(argv), envp.data()),
            0);
  posix_spawn_file_actions_destroy(&actions);
  const std::string line = LocalCluster::wait_for(output, "export LOOM_STORAGE_EXPORT=");
  const fs::path state = fs::path(line.substr(line.find('=') + 1)).parent_path();

  EXPECT_EQ(contents(victim), "root's\n") << "root wrote through loom-bob's link";
  const fs::path bobs = tmp / fmt::format("loom-up.{}", up);
  EXPECT_NE(state, bobs) << contents(output);
  struct stat st {};
  ASSERT_EQ(::stat(state.c_str(), &st), 0) << state;
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
  ASSERT_EQ(::stat((state / "loomctld.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "the controller's log is root's to read";

  ::kill(up, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(up, &status, 0), up);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << contents(output);
  EXPECT_FALSE(fs::exists(state)) << "a state directory of its own is removed at exit";
  fs::remove_all(tmp);
  fs::remove(output);
}

}  // namespace
}  // namespace loom::testing
