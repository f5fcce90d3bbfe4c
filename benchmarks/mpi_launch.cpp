// mpi_launch: how long Loom takes to start an MPI job, beside a plain `mpirun` of the same
// ranks. Each rank of tests/mpi/mpi_app prints the wall clock right after MPI_Init; a launch
// takes from the command (`loom submit --mpi`, or `mpirun`) to the last rank past MPI_Init.
// Loom's figure includes submission, scheduling and the agent's launch on an idle cluster
// (`loom up`): allocation is immediate there. With --hosts N the cluster is `loom up --netns
// N` and the job spans the N hosts: Open MPI's daemons start through loom-rsh (Munge, the
// controller, the node's agent); the baseline is mpirun run on the first host with an rsh
// agent that only enters the target host's namespaces (no checks at all). Rounds alternate
// Loom and mpirun; medians are reported. Run as root (loom up), with munged running.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "loom/common/host_name.hpp"
#include "process.hpp"

namespace {

using namespace loom::bench;

// The last rank's init_ns in mpi_app's output, and how many ranks reported.
std::pair<std::int64_t, unsigned> last_init(const std::string& output) {
  std::int64_t last = 0;
  unsigned ranks = 0;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t at = line.find("init_ns=");
    if (at == std::string::npos) continue;
    last = std::max<std::int64_t>(last, std::stoll(line.substr(at + 8)));
    ++ranks;
  }
  return {last, ranks};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mpi_launch: time from launch to every rank past MPI_Init, Loom (loom submit --mpi=mpirun "
      "and, on one host, --mpi=pmix) beside plain mpirun"};
  unsigned ranks = 4, rounds = 5, hosts = 1;
  bool json = false;
  app.add_option("--ranks", ranks, "Ranks per job, spread evenly over the hosts")
      ->capture_default_str();
  app.add_option("--hosts", hosts, "Hosts: 1 (loom up), or N > 1 (loom up --netns N)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 12u));
  app.add_option("--rounds", rounds, "Rounds, alternating Loom and mpirun")->capture_default_str();
  app.add_flag("--json", json, "Print one JSON object");
  CLI11_PARSE(app, argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "mpi_launch: run as root (loom up starts jobs as their users)\n");
    return 1;
  }
  const fs::path build = fs::read_symlink("/proc/self/exe").parent_path().parent_path();
  const std::string loom = (build / "cli" / "loom").string(),
                    mpi_app = (build / "tests" / "mpi" / "mpi_app").string();
  std::string pattern = "/tmp/loom-mpi-launch.XXXXXX";
  const fs::path dir = ::mkdtemp(pattern.data());
  fs::permissions(dir, fs::perms::all | fs::perms::sticky_bit);
  if (ranks % hosts != 0) {
    std::fprintf(stderr, "mpi_launch: --ranks must be a multiple of --hosts\n");
    return 2;
  }
  const unsigned per_host = ranks / hosts;
  std::vector<std::string> up_argv{
      loom,          "up",
      "--topology",  fmt::format("pack:1 numa:2 core:{} pu:1", (per_host + 1) / 2),
      "--state-dir", (dir / "up").string()};
  if (hosts > 1) {
    up_argv.insert(up_argv.end(), {"--netns", std::to_string(hosts)});
  } else {
    up_argv.insert(up_argv.end(), {"--agents", "1"});
  }
  const pid_t up = spawn(up_argv, {}, (dir / "up.out").string());
  std::vector<double> plain_ms, loom_ms, pmix_ms;
  // As loomd names the host to mpirun: its slots are the job's ranks.
  const std::string host = loom::host_name();
  try {
    const std::vector<std::string> env = up_exports(dir / "up.out");
    // mpirun without Loom: from the first host, its daemons through an rsh agent that only
    // enters the target host's namespaces, as Loom's testbed makes them.
    std::vector<std::string> plain_prefix, mpirun_hosts;
    for (unsigned h = 0; h < hosts; ++h)
      mpirun_hosts.push_back(fmt::format("node{}:{}", h, per_host));
    if (hosts == 1) mpirun_hosts = {fmt::format("{}:{}", host, ranks)};
    if (hosts > 1) {
      const std::string hosts_line = wait_line(dir / "up.out", "loom up: hosts on ");
      const std::size_t from = hosts_line.find("(network namespaces ") + 20;
      const std::string ns = hosts_line.substr(from, hosts_line.find("NAME)", from) - from);
      const std::string enter = fmt::format(
          "exec nsenter --net=/run/netns/{0}$1 -- unshare --uts --mount --propagation slave -- sh "
          "-c "
          "'mount --bind /etc/netns/{0}$0/hosts /etc/hosts && hostname $0 && exec sh -c \"$*\"' "
          "\"$@\"",
          ns);
      std::ofstream(dir / "rsh")
          << "#!/bin/sh\n# mpi_launch's baseline rsh agent: HOST COMMAND...\n"
          << enter << "\n";
      fs::permissions(dir / "rsh", fs::perms::owner_all);
      plain_prefix = {
          "nsenter",
          "--net=/run/netns/" + ns + "node0",
          "--",
          "unshare",
          "--uts",
          "--mount",
          "--propagation",
          "slave",
          "--",
          "sh",
          "-c",
          fmt::format(
              R"(mount --bind /etc/netns/{}node0/hosts /etc/hosts && hostname node0 && exec "$@")",
              ns),
          "sh"};
    }
    auto as_alice = [&](std::vector<std::string> argv) {
      argv.insert(argv.begin(), {"runuser", "-u", "loom-alice", "--"});
      return argv;
    };
    // From `loom submit --mpi=MODE` to the last rank past MPI_Init, in ms.
    auto loom_launch = [&](const std::string& mode, unsigned round) {
      const std::int64_t start = wall_ns();
      const std::string out = (dir / fmt::format("loom-{}-{}.out", mode, round)).string();
      const std::string id = capture(
          as_alice({loom, "submit", "--mpi=" + mode, "-N", std::to_string(hosts),
                    "--tasks-per-node", std::to_string(per_host), "-o", out, "--", mpi_app}),
          env, dir / "submit.out");
      capture(as_alice({loom, "watch", id.substr(0, id.find('\n'))}), env, dir / "watch.out");
      std::ifstream in(out);
      auto [last, reported] =
          last_init({std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()});
      if (reported != ranks)
        throw std::runtime_error(
            fmt::format("{} of {} ranks reported under Loom --mpi={}", reported, ranks, mode));
      return static_cast<double>(last - start) / 1e6;
    };
    const bool pmix = hosts == 1;  // --mpi=pmix serves jobs of one node so far
    for (unsigned round = 0; round <= rounds;
         ++round) {  // round 0 warms all up, and is not counted
      const double loom_time = loom_launch("mpirun", round);
      const double pmix_time = pmix ? loom_launch("pmix", round) : 0;

      const std::int64_t start = wall_ns();
      std::vector<std::string> mpirun{"mpirun",
                                      "-np",
                                      std::to_string(ranks),
                                      "--host",
                                      fmt::format("{}", fmt::join(mpirun_hosts, ",")),
                                      "--bind-to",
                                      "none",
                                      mpi_app};
      // Ranks sharing PUs yield when idle, as Loom has them do (else they spin and starve).
      if (ranks > std::thread::hardware_concurrency())
        mpirun.insert(mpirun.begin() + 1, {"--mca", "mpi_yield_when_idle", "1"});
      if (hosts > 1) {  // as root: entering namespaces needs it
        mpirun.insert(mpirun.begin() + 1,
                      {"--allow-run-as-root", "--mca", "plm_rsh_agent", (dir / "rsh").string(),
                       "--mca", "plm_rsh_no_tree_spawn", "1"});
        mpirun.insert(mpirun.begin(), plain_prefix.begin(), plain_prefix.end());
      } else {
        mpirun = as_alice(mpirun);
      }
      const std::string plain = capture(mpirun, {}, dir / "mpirun.out");
      auto [plain_last, plain_ranks] = last_init(plain);
      if (plain_ranks != ranks)
        throw std::runtime_error(
            fmt::format("{} of {} ranks reported under mpirun", plain_ranks, ranks));
      if (round == 0) continue;
      loom_ms.push_back(loom_time);
      if (pmix) pmix_ms.push_back(pmix_time);
      plain_ms.push_back(static_cast<double>(plain_last - start) / 1e6);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_launch: %s (see %s)\n", e.what(), dir.c_str());
    ::kill(up, SIGTERM);
    wait_exit(up);
    return 1;
  }
  ::kill(up, SIGTERM);
  wait_exit(up);
  fs::remove_all(dir);
  const nlohmann::json result = {
      {"benchmark", "mpi_launch"},
      {"ranks", ranks},
      {"hosts", hosts},
      {"rounds", rounds},
      {"mpirun_ms_p50", median(plain_ms)},
      {"loom_mpirun_ms_p50", median(loom_ms)},
      {"loom_mpirun_overhead_ms", median(loom_ms) - median(plain_ms)},
      {"loom_pmix_ms_p50",
       pmix_ms.empty() ? nlohmann::json(nullptr) : nlohmann::json(median(pmix_ms))},
      {"loom_pmix_overhead_ms", pmix_ms.empty()
                                    ? nlohmann::json(nullptr)
                                    : nlohmann::json(median(pmix_ms) - median(plain_ms))},
      {"conditions",
       hosts == 1 ? "one node of loom up (idle, so allocation is immediate); Loom's time from "
                    "`loom submit --mpi=mpirun` and `--mpi=pmix` "
                    "to the last rank past MPI_Init, mpirun's from its start; all as loom-alice, "
                    "Open MPI 4.1, "
                    "--bind-to none (Loom binds: loom-rank under mpirun, the keeper under pmix); "
                    "a warm-up round not counted"
                  : "hosts of loom up --netns (idle, so allocation is immediate), 2 cores shared "
                    "by all; Loom's time "
                    "from `loom submit --mpi=mpirun` (as loom-alice; daemons through loom-rsh) "
                    "to the "
                    "last rank past "
                    "MPI_Init, mpirun's from its start on the first host (as root; daemons through "
                    "an rsh agent "
                    "that only enters namespaces); Open MPI 4.1, --bind-to none, ranks yield when "
                    "idle where they outnumber "
                    "the PUs (both); a warm-up round not counted"}};
  if (json) {
    std::cout << result.dump(2) << '\n';
    return 0;
  }
  std::cout << fmt::format("{:>6} {:>6} {:>10} {:>12} {:>10} {:>12} {:>10}\n", "HOSTS", "RANKS",
                           "MPIRUN MS", "LOOM MPIRUN", "OVERHEAD", "LOOM PMIX", "OVERHEAD");
  const std::string pmix_cells =
      pmix_ms.empty()
          ? fmt::format("{:>12} {:>10}", "-", "-")
          : fmt::format("{:>12.1f} {:>10.1f}", median(pmix_ms), median(pmix_ms) - median(plain_ms));
  std::cout << fmt::format("{:>6} {:>6} {:>10.1f} {:>12.1f} {:>10.1f} {}\n", hosts, ranks,
                           median(plain_ms), median(loom_ms), median(loom_ms) - median(plain_ms),
                           pmix_cells);
  std::cout << fmt::format("medians of {} rounds; {}\n", rounds,
                           result["conditions"].get<std::string>());
  return 0;
}
