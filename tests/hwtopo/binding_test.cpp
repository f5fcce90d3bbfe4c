// Binds real child processes on this machine and asks the kernel what it applied.
#include "loom/hwtopo/binding.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "loom/common/index_list.hpp"
#include "loom/hwtopo/apply_binding.hpp"
#include "loom/hwtopo/load.hpp"
#include "run.hpp"

namespace loom::hwtopo {
namespace {

using loom::testing::built;
using loom::testing::run;

struct Probe {
  std::string cpus;       // Cpus_allowed_list
  std::string mempolicy;  // "bind 0"
};

Probe parse_probe(const std::string& out) {
  Probe probe;
  for (const std::string& line : loom::testing::lines(out)) {
    if (line.starts_with("Cpus_allowed_list: ")) probe.cpus = line.substr(19);
    if (line.starts_with("mempolicy: ")) probe.mempolicy = line.substr(11);
  }
  return probe;
}

// Forks, applies the binding in the child and execs the probe there, as an agent will.
Probe probe_in_bound_child(const Binder& binder, const Binding& binding) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe(pipe_fds), 0);
  const std::string probe = built("tests/hwtopo/mempolicy_probe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[1], 1);
    ::close(pipe_fds[0]);
    if (auto status = binder.apply(binding); !status) {
      std::fprintf(stderr, "apply: %s\n", status.error().to_string().c_str());
      ::_exit(3);
    }
    ::execl(probe.c_str(), probe.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;)
    out.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return parse_probe(out);
}

TEST(Binding, AChildBoundToOneCoreSeesOnlyThatCoreAndAStrictMemoryBinding) {
  auto binder = Binder::for_live_machine();
  ASSERT_TRUE(binder.has_value()) << binder.error().to_string();
  const Topology& machine = binder->machine();
  const Core& last = machine.cores.back();  // not core 0, so a default binding cannot pass
  const unsigned core = last.logical_index;
  auto binding = binder->resolve(std::vector<unsigned>{core}, last.numa);
  ASSERT_TRUE(binding.has_value()) << binding.error().to_string();
  Probe probe = probe_in_bound_child(*binder, *binding);
  EXPECT_EQ(probe.cpus, format_index_list(last.pus));
  EXPECT_EQ(probe.mempolicy, "bind " + std::to_string(last.numa));
}

TEST(Binding, WithoutADomainMemoryIsLeftAlone) {
  auto binder = Binder::for_live_machine();
  ASSERT_TRUE(binder.has_value());
  auto binding = binder->resolve(std::vector<unsigned>{0}, std::nullopt);
  ASSERT_TRUE(binding.has_value());
  Probe probe = probe_in_bound_child(*binder, *binding);
  EXPECT_EQ(probe.cpus, format_index_list(binder->machine().cores[0].pus));
  EXPECT_EQ(probe.mempolicy, "default ");
}

TEST(Binding, CoresAndDomainsThatDoNotExistAreRefused) {
  auto binder = Binder::for_live_machine();
  ASSERT_TRUE(binder.has_value());
  const std::size_t cores = binder->machine().cores.size();
  auto bad_core =
      binder->resolve(std::vector<unsigned>{static_cast<unsigned>(cores)}, std::nullopt);
  ASSERT_FALSE(bad_core.has_value());
  EXPECT_EQ(bad_core.error().message(), "core " + std::to_string(cores) +
                                            " does not exist: this node has cores 0-" +
                                            std::to_string(cores - 1));
  auto bad_numa = binder->resolve(std::vector<unsigned>{0}, 4096);
  ASSERT_FALSE(bad_numa.has_value());
  EXPECT_EQ(bad_numa.error().message().rfind("NUMA domain 4096 does not exist", 0), 0u);
  EXPECT_FALSE(binder->resolve(std::vector<unsigned>{}, std::nullopt).has_value());
}

// Past what a cpu_set_t or the memory policy's mask holds is refused before any change: not
// written out of bounds, and not a bind to fewer PUs than placed that still reads as bound.
TEST(Binding, APuOrNumaNodePastTheMasksIsRefusedAndNothingChanges) {
  cpu_set_t before;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(before), &before), 0);
  const std::vector<unsigned> far_pu{0, CPU_SETSIZE + 7};
  EXPECT_EQ(apply_binding(far_pu, std::nullopt),
            fmt::format("PU {} is beyond the largest this build binds to", CPU_SETSIZE + 7));
  EXPECT_EQ(apply_binding({}, 16 * 64), "NUMA node 1024 is beyond the largest this build binds to");
  cpu_set_t after;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&before, &after));
}

TEST(Binding, SimulatedNodesMapExplicitlyOntoRealPus) {
  auto placed = load_synthetic("pack:2 numa:2 core:16 pu:2");
  ASSERT_TRUE(placed.has_value());
  auto binder = Binder::for_simulated(*placed);
  ASSERT_TRUE(binder.has_value()) << binder.error().to_string();
  ASSERT_TRUE(binder->simulated());
  const Topology& machine = binder->machine();
  std::vector<unsigned> real_pus;
  for (const Core& c : machine.cores) real_pus.insert(real_pus.end(), c.pus.begin(), c.pus.end());
  std::ranges::sort(real_pus);

  // Core 37 of the simulated node is in domain 2 (cores 32-47); its PUs are 74 and 75.
  auto binding = binder->resolve(std::vector<unsigned>{37}, 2);
  ASSERT_TRUE(binding.has_value()) << binding.error().to_string();
  EXPECT_EQ(binding->pus, (std::vector<unsigned>{74, 75}));
  EXPECT_EQ(binding->numa, 2u);
  std::vector<unsigned> expected{real_pus[74 % real_pus.size()], real_pus[75 % real_pus.size()]};
  std::ranges::sort(expected);
  expected.erase(std::ranges::unique(expected).begin(), expected.end());
  EXPECT_EQ(binding->applied_pus, expected);
  EXPECT_EQ(binding->applied_numa, machine.numa_domains[2 % machine.numa_domains.size()].os_index);
  EXPECT_NE(binder->describe_mapping().find("k mod " + std::to_string(real_pus.size())),
            std::string::npos);

  Probe probe = probe_in_bound_child(*binder, *binding);
  EXPECT_EQ(probe.cpus, format_index_list(expected));
  EXPECT_EQ(probe.mempolicy, "bind " + std::to_string(*binding->applied_numa));

  // A simulated core beyond the simulated node is refused, not wrapped.
  EXPECT_FALSE(binder->resolve(std::vector<unsigned>{64}, std::nullopt).has_value());
}

TEST(LoomBind, RunsTheCommandBoundAndReportsBothSets) {
  auto machine = load_live();
  ASSERT_TRUE(machine.has_value());
  const Core& last = machine->cores.back();
  auto done =
      run({built("cli/loom"), "bind", "--verbose", "--cores", std::to_string(last.logical_index),
           "--numa", std::to_string(last.numa), "--", built("tests/hwtopo/mempolicy_probe")});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  Probe probe = parse_probe(done.out);
  EXPECT_EQ(probe.cpus, format_index_list(last.pus));
  EXPECT_EQ(probe.mempolicy, "bind " + std::to_string(last.numa));
  EXPECT_NE(done.err.find("loom bind: cores " + std::to_string(last.logical_index)),
            std::string::npos)
      << done.err;
}

TEST(LoomBind, ReportsTheSimulatedAndTheAppliedBinding) {
  auto done =
      run({built("cli/loom"), "bind", "--verbose", "--synthetic", "pack:2 numa:2 core:16 pu:2",
           "--cores", "40-41", "--numa", "2", "--", built("tests/hwtopo/mempolicy_probe")});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_NE(done.err.find("mapped onto this machine"), std::string::npos) << done.err;
  EXPECT_NE(done.err.find("cores 40-41 (PUs 80-83) memory on NUMA 2 -> applied PUs "),
            std::string::npos)
      << done.err;
}

TEST(LoomBind, BadRequestsGetOneLineAndANonZeroExit) {
  auto bad_core = run({built("cli/loom"), "bind", "--cores", "4096", "--", "true"});
  EXPECT_EQ(bad_core.exit_code, 1);
  EXPECT_EQ(loom::testing::lines(bad_core.err).size(), 1u) << bad_core.err;
  EXPECT_EQ(bad_core.err.rfind("loom: core 4096 does not exist", 0), 0u) << bad_core.err;

  auto missing = run({built("cli/loom"), "bind", "--cores", "0", "--", "/nonexistent/program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_EQ(missing.err, "loom: cannot run /nonexistent/program: No such file or directory\n");
}

}  // namespace
}  // namespace loom::hwtopo
