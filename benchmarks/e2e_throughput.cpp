// e2e_throughput: how fast jobs go through Loom end to end, beside Slurm on the same machine.
//
// Loom: `loom up --agents 4` (nodes of 4 cores: 2 NUMA domains of 2), twice: over TLS, as
// loom up runs by default ("loom"), and plain (`--no-tls`, "loom-plain"), for what TLS
// costs; both clusters run throughout, each idle while the other is measured. Slurm 22.05 from
// Debian: slurmctld and 4 emulated slurmd of 4 CPUs (benchmarks/slurm-up.sh), with
// sched/backfill, select/cons_tres, batch_sched_delay=0 and an Epilog. For each, N trivial
// jobs (/bin/true, as root):
//   loop:  one `loom submit` (`sbatch`) process after another;
//   array: one `loom submit --array 1-N` (`sbatch --array 1-N`);
// and reports submissions per second, jobs drained per second from the first submission
// until none is pending or running, and the median submit-to-start latency of single jobs
// on an idle cluster (from before the submitting process starts to the job's first
// instruction, which prints the wall clock). Rounds alternate the systems (A B C A B C);
// rates are the median over rounds. fsyncs per job are counted apart (strace -c on the
// controller during a 100-job loop), since tracing slows what it traces.
//
//   e2e_throughput [--jobs 1000] [--rounds 3] [--latency-jobs 20] [--json]
//
// Needs root, munged, strace, and a release build (build/release); installs slurm-wlm when
// missing. Stops everything it starts, by PID.
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"

namespace {

using namespace loom::bench;

// One system under test: how to submit, how to tell it has drained, and its controller.
struct System {
  std::string name;
  std::vector<std::string> env;
  std::function<std::vector<std::string>(const std::string& output,
                                         const std::vector<std::string>& command)>
      submit;
  std::function<std::vector<std::string>(unsigned n)> submit_array;
  std::function<bool()> drained;
  std::function<pid_t()> controller;
};

struct Rates {
  double submit_per_s = 0;
  double drain_per_s = 0;
};

Rates loop(const System& s, unsigned jobs) {
  const auto start = Clock::now();
  for (unsigned i = 0; i < jobs; ++i) {
    if (wait_exit(spawn(s.submit("/dev/null", {"/bin/true"}), s.env)) != 0)
      throw std::runtime_error(s.name + ": a submission failed");
  }
  const double submitted = seconds_since(start);
  while (!s.drained()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return {jobs / submitted, jobs / seconds_since(start)};
}

Rates array(const System& s, unsigned jobs) {
  const auto start = Clock::now();
  if (wait_exit(spawn(s.submit_array(jobs), s.env)) != 0)
    throw std::runtime_error(s.name + ": the array submission failed");
  const double submitted = seconds_since(start);
  while (!s.drained()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return {jobs / submitted, jobs / seconds_since(start)};
}

// Submit-to-start of one job on an idle cluster, in ms: the job prints the wall clock first.
double latency_ms(const System& s, const fs::path& dir, unsigned i) {
  const fs::path out = dir / fmt::format("latency-{}-{}.txt", s.name, i);
  const std::int64_t before = wall_ns();
  if (wait_exit(spawn(s.submit(out.string(), {"date", "+%s%N"}), s.env)) != 0)
    throw std::runtime_error(s.name + ": submission failed");
  std::string line;
  for (const auto deadline = Clock::now() + std::chrono::seconds(60);
       line.empty() && Clock::now() < deadline;) {
    std::ifstream in(out);
    std::getline(in, line);
    if (line.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (line.empty()) throw std::runtime_error(s.name + ": a latency job never started");
  while (!s.drained()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return static_cast<double>(std::stoll(line) - before) / 1e6;
}

// fsyncs (and fdatasyncs) of the controller per job, over a loop of `jobs` submissions.
double fsyncs_per_job(const System& s, const fs::path& dir, unsigned jobs) {
  const fs::path report = dir / fmt::format("strace-{}.txt", s.name);
  const pid_t tracer = spawn({"strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o",
                              report.string(), "-p", std::to_string(s.controller())},
                             {});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // strace attaches to every thread
  loop(s, jobs);
  ::kill(tracer, SIGINT);
  wait_exit(tracer);
  std::ifstream in(report);
  double calls = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f{std::istream_iterator<std::string>(fields),
                               std::istream_iterator<std::string>()};
    if (f.size() >= 5 && (f.back() == "fsync" || f.back() == "fdatasync")) calls += std::stod(f[3]);
  }
  return calls / jobs;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned jobs = 1000, rounds = 3, latency_jobs = 20;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      return i + 1 < argc ? std::stoul(argv[++i]) : throw std::runtime_error(a + " needs a value");
    };
    if (a == "--jobs")
      jobs = static_cast<unsigned>(next());
    else if (a == "--rounds")
      rounds = static_cast<unsigned>(next());
    else if (a == "--latency-jobs")
      latency_jobs = static_cast<unsigned>(next());
    else if (a == "--json")
      json = true;
    else {
      std::fprintf(stderr,
                   "usage: e2e_throughput [--jobs N] [--rounds R] [--latency-jobs K] [--json]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr,
                 "e2e_throughput: run as root (loom up and slurmd start jobs as their users)\n");
    return 1;
  }
  const fs::path self =
      fs::read_symlink("/proc/self/exe").parent_path();  // build/<preset>/benchmarks
  const fs::path loom = self.parent_path() / "cli" / "loom";
  const fs::path slurm_up = fs::path(LOOM_SOURCE_DIR) / "benchmarks" / "slurm-up.sh";
  const fs::path dir = fs::temp_directory_path() / fmt::format("e2e_throughput.{}", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "loom.toml") << "[agent]\nallow_root_jobs = true\n";

  std::vector<pid_t> ups;
  bool slurm_started = false;
  auto stop = [&] {
    for (const pid_t up : ups) {
      ::kill(up, SIGTERM);
      wait_exit(up);
    }
    if (slurm_started)
      wait_exit(spawn({"bash", slurm_up.string(), "stop", (dir / "slurm").string()}, {}));
    fs::remove_all(dir);
  };
  try {
    const fs::path scratch = dir / "scratch.txt";
    auto loom_system = [&](const std::string& name, const std::vector<std::string>& up_args) {
      std::vector<std::string> argv{loom.string(), "up",
                                    "--agents",    "4",
                                    "--topology",  "pack:1 numa:2 core:2 pu:1",
                                    "--state-dir", (dir / name).string()};
      argv.insert(argv.end(), up_args.begin(), up_args.end());
      const fs::path out = dir / (name + ".out");
      const pid_t up = spawn(argv, {"LOOM_CONFIG=" + (dir / "loom.toml").string()}, out.string());
      ups.push_back(up);
      const std::vector<std::string> env = up_exports(out);
      return System{name,
                    env,
                    [&](const std::string& output, const std::vector<std::string>& command) {
                      std::vector<std::string> submit{loom.string(), "submit", "-o", output, "--"};
                      submit.insert(submit.end(), command.begin(), command.end());
                      return submit;
                    },
                    [&](unsigned n) {
                      return std::vector<std::string>{
                          loom.string(), "submit",    "--array", fmt::format("1-{}", n),
                          "-o",          "/dev/null", "--",      "/bin/true"};
                    },
                    [&, env] {
                      return nlohmann::json::parse(
                                 capture({loom.string(), "queue", "--json"}, env, scratch))["jobs"]
                          .empty();
                    },
                    [&, up] {
                      return static_cast<pid_t>(std::stoi(capture(
                          {"pgrep", "-x", "-P", std::to_string(up), "loomctld"}, {}, scratch)));
                    }};
    };
    const System l = loom_system("loom", {});
    const System p = loom_system("loom-plain", {"--no-tls"});
    if (wait_exit(spawn({"bash", slurm_up.string(), "start", (dir / "slurm").string(), "4", "4"},
                        {}, (dir / "slurm-up.out").string())) != 0) {
      throw std::runtime_error("slurm-up.sh failed: see its output");
    }
    slurm_started = true;
    const std::string slurm_conf = "SLURM_CONF=" + (dir / "slurm" / "slurm.conf").string();
    const System s{
        "slurm",
        {slurm_conf},
        [&](const std::string& out, const std::vector<std::string>& command) {
          std::string wrap;
          for (const std::string& c : command) wrap += (wrap.empty() ? "" : " ") + c;
          return std::vector<std::string>{"sbatch", "-Q", "-o", out, "--wrap", wrap};
        },
        [&](unsigned n) {
          return std::vector<std::string>{"sbatch", "-Q",        "--array", fmt::format("1-{}", n),
                                          "-o",     "/dev/null", "--wrap",  "/bin/true"};
        },
        [&] {
          return capture({"squeue", "-h"}, {slurm_conf}, scratch).empty();
        },
        [&] {
          return static_cast<pid_t>(
              std::stoi(capture({"cat", (dir / "slurm" / "slurmctld.pid").string()}, {}, scratch)));
        }};

    std::map<std::string, std::map<std::string, std::vector<double>>>
        samples;  // system -> metric -> rounds
    for (unsigned round = 0; round < rounds; ++round) {
      for (const System* sys : {&l, &p, &s}) {
        const Rates r = loop(*sys, jobs);
        samples[sys->name]["loop.submit_per_s"].push_back(r.submit_per_s);
        samples[sys->name]["loop.drain_per_s"].push_back(r.drain_per_s);
      }
      for (const System* sys : {&l, &p, &s}) {
        const Rates r = array(*sys, jobs);
        samples[sys->name]["array.submit_per_s"].push_back(r.submit_per_s);
        samples[sys->name]["array.drain_per_s"].push_back(r.drain_per_s);
      }
      if (!json) std::fprintf(stderr, "round %u of %u done\n", round + 1, rounds);
    }
    std::map<std::string, std::vector<double>> latencies;
    for (unsigned i = 0; i < latency_jobs; ++i) {
      for (const System* sys : {&l, &p, &s})
        latencies[sys->name].push_back(latency_ms(*sys, dir, i));
    }
    std::map<std::string, double> fsyncs;
    for (const System* sys : {&l, &p, &s}) fsyncs[sys->name] = fsyncs_per_job(*sys, dir, 100);

    nlohmann::json out;
    for (const System* sys : {&l, &p, &s}) {
      auto& m = samples[sys->name];
      const double p50 = median(latencies[sys->name]);
      for (const char* mode : {"loop", "array"}) {
        out[sys->name][mode] = {{"submit_per_s", median(m[fmt::format("{}.submit_per_s", mode)])},
                                {"drain_per_s", median(m[fmt::format("{}.drain_per_s", mode)])},
                                {"start_latency_ms_p50", p50}};
      }
      out[sys->name]["fsyncs_per_job"] = fsyncs[sys->name];
    }
    out["conditions"] = {{"jobs", jobs},
                         {"rounds", rounds},
                         {"latency_jobs", latency_jobs},
                         {"cluster",
                          "4 nodes of 4 cores; loom up (simulated nodes) over TLS (loom) and "
                          "--no-tls (loom-plain), Slurm 22.05 (4 slurmd -N, config_overrides)"},
                         {"job", "/bin/true as root, output to /dev/null"},
                         {"slurm", "sched/backfill, select/cons_tres, batch_sched_delay=0, Epilog"},
                         {"rates", "median over rounds, the systems alternating"}};
    stop();
    if (json) {
      std::cout << out.dump(2) << '\n';
      return 0;
    }
    std::cout << fmt::format(
        "{} trivial jobs, {} rounds (medians), 4 nodes x 4 cores, this machine\n", jobs, rounds);
    std::cout << fmt::format("{:<11} {:<6} {:>12} {:>12} {:>18}\n", "system", "mode", "submit/s",
                             "drain/s", "start p50 (ms)");
    for (const char* sys : {"loom", "loom-plain", "slurm"}) {
      for (const char* mode : {"loop", "array"}) {
        const auto& r = out[sys][mode];
        std::cout << fmt::format("{:<11} {:<6} {:>12.1f} {:>12.1f} {:>18.1f}\n", sys, mode,
                                 r["submit_per_s"].get<double>(), r["drain_per_s"].get<double>(),
                                 r["start_latency_ms_p50"].get<double>());
      }
    }
    std::cout << fmt::format(
        "fsyncs per job (controller, 100-job loop): loom {:.2f}, loom-plain {:.2f}, slurm {:.2f}\n",
        fsyncs["loom"], fsyncs["loom-plain"], fsyncs["slurm"]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "e2e_throughput: %s\n", e.what());
    stop();
    return 1;
  }
}
