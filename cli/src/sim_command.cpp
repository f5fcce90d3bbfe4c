// loom [--config FILE] sim --swf FILE [--order fcfs|sjf|priority|fairshare]
//          [--backfill none|easy|conservative] [--cores-per-node N] [--window N --stride M]
//          [--load L] [--json]
// Replays a Standard Workload Format trace through Loom's scheduler library, under the
// configuration's [scheduler] section (loomctld's policy) unless --order or --backfill say
// otherwise.
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "commands.hpp"
#include "loom/sched/simulator.hpp"

namespace loom::cli {

Command add_sim(CLI::App& app) {
  auto* command = app.add_subcommand(
      "sim",
      "Replay an SWF workload trace through the scheduler and report wait, slowdown, utilization");
  struct Options {
    std::string swf;
    sched::SimOptions sim;
    std::optional<std::string> order, backfill;
    std::optional<std::uint64_t> depth;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  command->add_option("--swf", options->swf, "Trace in the Standard Workload Format")->required();
  command->add_option(
      "--order", options->order,
      "Queue order: fcfs, sjf, srtf, priority or fairshare (default: scheduler.order)");
  command->add_option("--backfill", options->backfill,
                      "Backfill: none, easy or conservative (default: scheduler.backfill)");
  command->add_option("--backfill-depth", options->depth,
                      "Conservative: blocked jobs planned per pass, 0 for all (default: "
                      "scheduler.backfill_depth)");
  command
      ->add_option("--cores-per-node", options->sim.cores_per_node,
                   "Cores per simulated node (the machine's size comes from the trace header)")
      ->capture_default_str();
  command->add_option("--window", options->sim.window,
                      "Jobs per window, each replayed from an empty machine");
  command->add_option("--stride", options->sim.stride,
                      "Jobs between window starts (default: the window)");
  command->add_option("--load", options->sim.load,
                      "Scale arrival times to this offered load (work / (cores x span)), e.g. "
                      "0.9; 0: as recorded");
  command->add_flag("--json", options->json, "Print one JSON object");
  return {
      command, [options](const Context& context) -> Status {
        options->sim.scheduler = context.config.scheduler;
        if (options->order) options->sim.scheduler.order = *options->order;
        if (options->backfill) options->sim.scheduler.backfill = *options->backfill;
        if (options->depth) options->sim.scheduler.backfill_depth = *options->depth;
        const Config::Scheduler& policy = options->sim.scheduler;
        std::ifstream in(options->swf);
        if (!in) {
          return make_error(ErrorCode::kNotFound,
                            fmt::format("cannot read trace {}", options->swf));
        }
        std::stringstream text;
        text << in.rdbuf();
        sched::SwfTrace trace = LOOM_TRY(sched::parse_swf(text.str(), options->swf));
        const auto begin = std::chrono::steady_clock::now();
        sched::SimMetrics m = LOOM_TRY(sched::simulate(trace, options->sim));
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        if (options->json) {
          nlohmann::json j = {
              {"trace", options->swf},
              {"order", policy.order},
              {"backfill", policy.backfill},
              {"backfill_depth", policy.backfill_depth},
              {"nodes", m.nodes},
              {"cores_per_node", m.cores_per_node},
              {"jobs", m.jobs},
              {"skipped", m.skipped},
              {"windows", m.windows},
              {"offered_load", m.offered_load},
              {"utilization", m.utilization},
              {"avg_wait_s", m.avg_wait_s},
              {"avg_bsld", m.avg_bsld},
              {"max_wait_s", m.max_wait_s},
              {"makespan_s", m.makespan_s},
              {"preempted", m.preempted},
              {"sim_seconds", seconds},
          };
          std::cout << j.dump(2) << '\n';
          return {};
        }
        std::cout << fmt::format(
            "trace       {}\nmachine     {} nodes x {} cores\npolicy      {} backfill, {} order\n"
            "jobs        {} in {} window(s), {} skipped\noffered     {:.3f}\nutilization {:.3f}\n"
            "avg wait    {:.0f} s\n"
            "avg bsld    {:.2f}\nmax wait    {:.0f} s\nmakespan    {:.0f} s\npreempted   {}\n"
            "sim time    {:.3f} s\n",
            options->swf, m.nodes, m.cores_per_node, policy.backfill, policy.order, m.jobs,
            m.windows, m.skipped, m.offered_load, m.utilization, m.avg_wait_s, m.avg_bsld,
            m.max_wait_s, m.makespan_s, m.preempted, seconds);
        return {};
      }};
}

}  // namespace loom::cli
