// preempt_delay: how long an urgent job waits when it must preempt, against the same job's
// start on an idle cluster, measured in the same run.
//
// `loom up --agents 1` (one node of 4 cores) with a `debug` QOS that preempts `normal` and
// controller.kill_grace = G. Each round times, from before `loom submit` starts to the debug
// job's first instruction (it prints the wall clock), a 4-core debug job:
//   idle:     on the idle node (the baseline);
//   sigterm:  on a node a normal job fills, which exits on SIGTERM (sleep);
//   ignoring: on a node a normal job fills that ignores SIGTERM, so that only SIGKILL, G
//             later, ends it.
// The delay preemption adds is the difference from idle; for `ignoring` it is G and the same
// overhead. Medians over rounds; the victims are cancelled after each.
//
// And what a requeue costs the preempted job: a 4-core job with a slice and an input of M
// MiB staged in is preempted; its restart is timed from the debug job's end to its second
// run's first instruction, against its first start (submit to first instruction, the
// input staged), measured in the same round:
//   kept:     its slice was kept, the input in it unchanged: not staged again;
//   restaged: it changed its input in the slice, which is staged again (as every requeue
//             was before slices were kept).
//
//   preempt_delay [--rounds 5] [--kill-grace 2] [--input-mib 256] [--json]
//
// Needs root and munged, and a release build (build/release). Stops what it starts, by PID.
#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"

namespace {

using namespace loom::bench;
using nlohmann::json;

struct Loom {
  fs::path loom;
  fs::path dir;
  std::vector<std::string> env;

  std::string run(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{loom.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return capture(argv, env, dir / "scratch.txt");
  }
  std::string state(const std::string& id) const {
    return json::parse(run({"show", id, "--json"}))["state"];
  }
  void wait_state(const std::string& id, const std::string& want) const {
    for (const auto deadline = Clock::now() + std::chrono::seconds(60); state(id) != want;) {
      if (Clock::now() > deadline)
        throw std::runtime_error(fmt::format("job {} never {}", id, want));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
};

// Submit-to-start of a 4-core debug job, in ms, from before `loom submit` starts.
double urgent_start_ms(const Loom& l, const std::string& name) {
  const fs::path out = l.dir / (name + ".txt");
  fs::remove(out);  // the last round's
  const std::int64_t before = wall_ns();
  const std::string id =
      l.run({"submit", "--qos", "debug", "-c", "4", "-o", out.string(), "--", "date", "+%s%N"});
  std::string line;
  for (const auto deadline = Clock::now() + std::chrono::seconds(120);
       line.empty() && Clock::now() < deadline;) {
    std::ifstream in(out);
    std::getline(in, line);
    if (line.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (line.empty()) throw std::runtime_error(name + ": the debug job never started");
  l.wait_state(id.substr(0, id.find('\n')), "COMPLETED");
  return static_cast<double>(std::stoll(line) - before) / 1e6;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The file's first `n` lines, once it has them.
std::vector<std::string> wait_lines(const fs::path& file, std::size_t n) {
  for (const auto deadline = Clock::now() + std::chrono::seconds(120); Clock::now() < deadline;
       std::this_thread::sleep_for(std::chrono::milliseconds(2))) {
    std::ifstream in(file);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    if (lines.size() >= n) return lines;
  }
  throw std::runtime_error(fmt::format("{} never had {} lines", file.string(), n));
}

struct Requeue {
  double first_start_ms = 0;
  double restart_ms = 0;
};

// A job staging storage:/input.bin into its slice, preempted by a debug job and started
// again once that ends; each run appends the wall clock at its first instruction.
Requeue requeue(const Loom& l, const std::string& name, bool changes_input) {
  const fs::path times = l.dir / (name + ".times"), release = l.dir / "release";
  fs::remove(times);
  fs::remove(release);
  const std::string script = fmt::format(
      "date +%s%N >> {}; [ -e \"$LOOM_BB_DIR/ran\" ] && exit 0; touch \"$LOOM_BB_DIR/ran\"; "
      "{}exec sleep 1000",
      times.string(), changes_input ? "echo x >> \"$LOOM_BB_DIR/input.bin\"; " : "");
  const std::int64_t submitted = wall_ns();
  const std::string victim =
      first_line(l.run({"submit", "-c", "4", "--bb", "2G", "--stage-in", "storage:/input.bin", "-o",
                        "/dev/null", "--", "sh", "-c", script}));
  const std::int64_t first = std::stoll(wait_lines(times, 1)[0]);
  const std::string urgent =
      first_line(l.run({"submit", "--qos", "debug", "-c", "4", "-o", "/dev/null", "--", "sh", "-c",
                        fmt::format("while [ ! -e {} ]; do sleep 0.01; done", release.string())}));
  l.wait_state(urgent, "RUNNING");
  const std::int64_t released = wall_ns();
  std::ofstream(release) << "";
  const std::int64_t again = std::stoll(wait_lines(times, 2)[1]);
  l.wait_state(victim, "COMPLETED");
  return {static_cast<double>(first - submitted) / 1e6,
          static_cast<double>(again - released) / 1e6};
}

// The same, with a normal job filling the node first, running `victim`.
double preempting_start_ms(const Loom& l, const std::string& name, const std::string& victim) {
  std::string id = l.run({"submit", "-c", "4", "-o", "/dev/null", "--", "sh", "-c", victim});
  id = id.substr(0, id.find('\n'));
  l.wait_state(id, "RUNNING");
  const double ms = urgent_start_ms(l, name);
  l.run({"cancel", id});
  l.wait_state(id, "CANCELLED");
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned rounds = 5, kill_grace = 2, input_mib = 256;
  bool as_json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      return i + 1 < argc ? std::stoul(argv[++i]) : throw std::runtime_error(a + " needs a value");
    };
    if (a == "--rounds") {
      rounds = static_cast<unsigned>(next());
    } else if (a == "--kill-grace") {
      kill_grace = static_cast<unsigned>(next());
    } else if (a == "--input-mib") {
      input_mib = static_cast<unsigned>(next());
    } else if (a == "--json") {
      as_json = true;
    } else {
      std::fprintf(stderr,
                   "usage: preempt_delay [--rounds N] [--kill-grace SECONDS] [--input-mib M] "
                   "[--json]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "preempt_delay: run as root (loom up starts jobs as their users)\n");
    return 1;
  }
  const fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
  const fs::path dir = fs::temp_directory_path() / fmt::format("preempt_delay.{}", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "loom.toml") << fmt::format(
      "[agent]\nallow_root_jobs = true\n\n[controller]\nkill_grace = \"{}s\"\n\n"
      "[[qos]]\nname = \"debug\"\npriority = 100\npreempt = [\"normal\"]\n",
      kill_grace);
  const fs::path up_out = dir / "up.out";
  const pid_t up =
      spawn({(self.parent_path() / "cli" / "loom").string(), "up", "--agents", "1", "--topology",
             "pack:1 core:4 pu:1", "--state-dir", (dir / "state").string()},
            {"LOOM_CONFIG=" + (dir / "loom.toml").string()}, up_out.string());
  auto stop = [&] {
    ::kill(up, SIGTERM);
    wait_exit(up);
    fs::remove_all(dir);
  };
  try {
    const Loom l{self.parent_path() / "cli" / "loom", dir, up_exports(up_out)};
    {
      const std::string line = wait_line(up_out, "export LOOM_STORAGE_EXPORT=");
      std::ofstream(fs::path(line.substr(line.find('=') + 1)) / "input.bin")
          << std::string(std::size_t{input_mib} << 20, 'i');
    }
    std::map<std::string, std::vector<double>> ms;
    std::map<std::string, std::vector<Requeue>> requeues;
    for (unsigned r = 0; r < rounds; ++r) {
      ms["idle"].push_back(urgent_start_ms(l, "idle"));
      ms["sigterm"].push_back(preempting_start_ms(l, "sigterm", "exec sleep 1000"));
      ms["ignoring"].push_back(preempting_start_ms(l, "ignoring", "trap '' TERM; exec sleep 1000"));
      requeues["kept"].push_back(requeue(l, "kept", false));
      requeues["restaged"].push_back(requeue(l, "restaged", true));
      if (!as_json) std::fprintf(stderr, "round %u of %u done\n", r + 1, rounds);
    }
    json out;
    for (const auto& [name, samples] : ms) {
      out[name] = {{"start_ms_p50", median(samples)},
                   {"delay_ms_p50", median(samples) - median(ms["idle"])}};
    }
    for (const auto& [name, samples] : requeues) {
      std::vector<double> first, restart;
      for (const Requeue& q : samples) {
        first.push_back(q.first_start_ms);
        restart.push_back(q.restart_ms);
      }
      out["requeue_" + name] = {{"first_start_ms_p50", median(first)},
                                {"restart_ms_p50", median(restart)}};
    }
    out["conditions"] = {
        {"rounds", rounds},
        {"kill_grace_s", kill_grace},
        {"cluster", "loom up, 1 node of 4 cores, over TLS; a debug QOS preempting normal"},
        {"job", "4-core debug job printing the wall clock; start = its first instruction"},
        {"baseline", "idle: the same job on the idle node"},
        {"requeue",
         fmt::format("a 4-core job with a 2 GiB slice staging {} MiB in, preempted by a 4-core "
                     "debug job; restart = from the debug job's end to its second run's first "
                     "instruction; baseline: restaged (it changed its input, staged again)",
                     input_mib)}};
    stop();
    if (as_json) {
      std::cout << out.dump(2) << '\n';
      return 0;
    }
    std::cout << fmt::format("{} rounds (medians), 1 node x 4 cores, kill_grace {} s\n", rounds,
                             kill_grace);
    std::cout << fmt::format("{:<10} {:>16} {:>18}\n", "victim", "start p50 (ms)",
                             "delay vs idle (ms)");
    for (const char* name : {"idle", "sigterm", "ignoring"}) {
      std::cout << fmt::format("{:<10} {:>16.1f} {:>18.1f}\n", name,
                               out[name]["start_ms_p50"].get<double>(),
                               out[name]["delay_ms_p50"].get<double>());
    }
    std::cout << fmt::format("\nrequeued job, {} MiB staged in\n{:<10} {:>22} {:>18}\n", input_mib,
                             "slice", "first start p50 (ms)", "restart p50 (ms)");
    for (const char* name : {"kept", "restaged"}) {
      const json& q = out[std::string("requeue_") + name];
      std::cout << fmt::format("{:<10} {:>22.1f} {:>18.1f}\n", name,
                               q["first_start_ms_p50"].get<double>(),
                               q["restart_ms_p50"].get<double>());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "preempt_delay: %s\n", e.what());
    stop();
    return 1;
  }
}
