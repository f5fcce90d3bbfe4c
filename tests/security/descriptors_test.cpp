// A job must hold no descriptor of the agent's. Issue 19 found every job inheriting root
// loomd's libfabric descriptors (its epoll, a listening socket, socket pairs) once its node
// had staged: a job of loom-bob's added an event of its choosing to loomd's epoll and the
// next staging crashed loomd. libfabric opens them without close-on-exec, so the agent
// holds them here as it does after a staging, and a task is started as loomd starts one.
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>

#include "loom/agent/task.hpp"
#include "loom/fabric/fabric.hpp"
#include "run.hpp"
#include "temp.hpp"

namespace loom::agent {
namespace {

namespace fs = std::filesystem;

// The descriptors a process holds, each with what it refers to.
std::map<int, std::string> descriptors(pid_t pid) {
  std::map<int, std::string> out;
  const fs::path dir = fs::path("/proc") / std::to_string(pid) / "fd";
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::error_code ec;
    out[std::stoi(entry.path().filename().string())] = fs::read_symlink(entry.path(), ec).string();
  }
  return out;
}

std::string describe(const std::map<int, std::string>& fds) {
  std::string text;
  for (const auto& [fd, target] : fds) text += std::to_string(fd) + " -> " + target + "\n";
  return text;
}

// Whether a process is in its sleep: after exec the dynamic loader opens and closes the
// libraries (a descriptor 3 that comes and goes), so a listing means something only once
// the program has reached the call it waits in.
bool sleeping(pid_t pid) {
  std::ifstream in(fs::path("/proc") / std::to_string(pid) / "syscall");
  long number = -1;
  in >> number;
  return number == SYS_clock_nanosleep || number == SYS_nanosleep;
}

pid_t child_of(pid_t parent) {
  std::ifstream in(fs::path("/proc") / std::to_string(parent) / "task" / std::to_string(parent) /
                   "children");
  pid_t child = -1;
  in >> child;
  return child;
}

TEST(Descriptors, ATaskHoldsOnlyItsOwnWhateverTheAgentHasOpen) {
  ASSERT_EQ(::geteuid(), 0u) << "tasks are started as root starts them";
  const passwd* alice = ::getpwnam("loom-alice");
  ASSERT_NE(alice, nullptr) << "scripts/install-deps.sh creates loom-alice";
  // What a storage agent or a stager holds: a libfabric endpoint on tcp, and, made here
  // without close-on-exec as libfabric makes its own, an epoll and a listening socket.
  auto info = fabric::Info::choose({"tcp;ofi_rxm", "lo"});
  ASSERT_TRUE(info) << info.error().to_string();
  auto f = fabric::Fabric::open(*info);
  auto domain = fabric::Domain::open(*f, *info);
  auto endpoint = fabric::Endpoint::open(*domain);
  ASSERT_TRUE(endpoint) << endpoint.error().to_string();
  const int epoll = ::epoll_create(1);
  const int listening = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listening, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listening, 1), 0);
  ASSERT_GT(descriptors(::getpid()).size(), 5u) << "the agent side holds descriptors to leak";

  const fs::path dir = testing::temp_path("fd-job");
  const fs::path state = testing::temp_path("fd-state");
  fs::create_directories(dir);
  fs::create_directories(state);
  ::chown(dir.c_str(), alice->pw_uid, alice->pw_gid);
  const std::string level = "security_" + std::to_string(::getpid());
  TaskSpec spec;
  spec.cgroup_name = level + "/task";
  spec.argv = {"sleep", "60"};
  spec.environment = {{"PATH", "/usr/bin:/bin"}};
  spec.chdir = dir.string();
  spec.stdout_path = (dir / "out").string();
  spec.stderr_path = spec.stdout_path;
  spec.uid = alice->pw_uid;
  spec.status_path = state / "status";
  spec.keeper = testing::built("agent/loom-keeper");
  auto tree = CgroupTree::find(CgroupChoice::kAuto);
  ASSERT_TRUE(tree) << tree.error().to_string();
  auto task = Task::start(*tree, spec);
  ASSERT_TRUE(task) << task.error().to_string();
  // start() returns once the task has exec'd (the report pipe closed at exec).
  const pid_t keeper = task->record().keeper;
  const pid_t job = child_of(keeper);
  ASSERT_GT(job, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!sleeping(job) && std::chrono::steady_clock::now() < deadline) ::usleep(1000);
  ASSERT_TRUE(sleeping(job)) << "the job never reached its sleep";
  const std::map<int, std::string> jobs = descriptors(job);
  EXPECT_EQ((std::set<int>{0, 1, 2}), [&] {
    std::set<int> fds;
    for (const auto& [fd, target] : jobs) fds.insert(fd);
    return fds;
  }()) << describe(jobs);
  const std::map<int, std::string> keepers = descriptors(keeper);
  for (const auto& [fd, target] : keepers) {
    EXPECT_LE(fd, 2) << "the keeper, which outlives the agent, holds\n" << describe(keepers);
  }
  ASSERT_TRUE(task->kill());
  (void)task->wait();
  ::close(epoll);
  ::close(listening);
  { const Task ended = std::move(*task); }  // its cgroup goes with it, then the level can
  tree->remove_level(level);
  fs::remove_all(dir);
  fs::remove_all(state);
}

}  // namespace
}  // namespace loom::agent
