// The centre's policy keys: the [scheduler] section's (loomctld's queue order and
// backfill, and the weights of the priority order) and [mpi]'s (how MPI jobs start).
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "config_values.hpp"

namespace loom::config_detail {

namespace {

// One of `names`, stored in (config.*Section).*Field.
template <auto Section, auto Field, std::size_t N>
Status one_of(Config& config, const toml::node& value,
              const std::array<std::string_view, N>& names) {
  std::string name = LOOM_TRY(as_string(value));
  if (std::ranges::find(names, name) == names.end()) {
    std::string listed;
    for (std::size_t i = 0; i < N; ++i)
      listed += fmt::format("{}\"{}\"", i == 0 ? "" : i + 1 == N ? " or " : ", ", names[i]);
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("must be {}, got \"{}\"", listed, name));
  }
  (config.*Section).*Field = std::move(name);
  return {};
}

constexpr std::array<std::string_view, 5> kOrders = {"fcfs", "sjf", "srtf", "priority",
                                                     "fairshare"};
constexpr std::array<std::string_view, 3> kBackfills = {"none", "easy", "conservative"};
constexpr std::array<std::string_view, 2> kMpiLaunches = {"pmix", "mpirun"};

const std::array kSchedulerKeys = {
    KeySpec{
        {"scheduler.order", "string", "fcfs",
         "Which pending job loomctld starts first: \"fcfs\" (submit time), \"sjf\" (shortest "
         "walltime), \"srtf\" (as sjf, and a job that cannot start requeues the running jobs, "
         "of no higher QOS, with more walltime left than it asks for), \"priority\" (Slurm's "
         "multifactor: the weighted sum of age, size, fair "
         "share and the job's own priority, weighted by the keys below) or \"fairshare\" (the "
         "account whose use of the cluster, by dominant resource, now and decayed over "
         "fair_share_half_life, is least for its [[accounts]] shares, first). SIGHUP "
         "applies a change to the running loomctld."},
        [](Config& config, const toml::node& value) {
          return one_of<&Config::scheduler, &Config::Scheduler::order>(config, value, kOrders);
        },
        [](const Config& config) { return config.scheduler.order; },
    },
    KeySpec{
        {"scheduler.backfill", "string", "easy",
         "Which later jobs may start while the first job in order waits for room: \"none\" (a "
         "strict queue), \"easy\" (those that do not delay the first blocked job, as Lifka's "
         "EASY) or \"conservative\" (those that delay no blocked job; a pass costs more with "
         "long queues). Each needs walltimes to plan with. SIGHUP applies a change."},
        [](Config& config, const toml::node& value) {
          return one_of<&Config::scheduler, &Config::Scheduler::backfill>(config, value,
                                                                          kBackfills);
        },
        [](const Config& config) { return config.scheduler.backfill; },
    },
    KeySpec{
        {"scheduler.backfill_depth", "integer", "0",
         "backfill = \"conservative\": how many blocked jobs, in order, a scheduling pass plans "
         "a start for, as Slurm's bf_max_job_test; the jobs after them wait for a later pass. "
         "0: every one (a pass then costs more the longer the queue: `loom sim` measures it "
         "on a trace)."},
        [](Config& config, const toml::node& value) -> Status {
          const auto depth = value.value<std::int64_t>();
          if (!depth || !value.is_integer() || *depth < 0 || *depth > 1'000'000)
            return make_error(ErrorCode::kInvalidArgument, "must be an integer from 0 to 1000000");
          config.scheduler.backfill_depth = static_cast<std::uint64_t>(*depth);
          return {};
        },
        [](const Config& config) { return std::to_string(config.scheduler.backfill_depth); },
    },
    weight_key<&Config::scheduler, &Config::Scheduler::age_weight>(
        {"scheduler.age_weight", "number", "1000",
         "order = \"priority\": the weight of a job's age, its wait over scheduler.max_age "
         "(at most 1)."}),
    duration_key<&Config::scheduler, &Config::Scheduler::max_age, 1>(
        {"scheduler.max_age", "duration", "7-00:00:00",
         "order = \"priority\": the wait at which a job's age factor reaches 1, as Slurm's "
         "PriorityMaxAge."}),
    weight_key<&Config::scheduler, &Config::Scheduler::size_weight>(
        {"scheduler.size_weight", "number", "1000",
         "order = \"priority\": the weight of a job's size, its cores over the cluster's "
         "(wide jobs first, as Slurm's default)."}),
    weight_key<&Config::scheduler, &Config::Scheduler::fair_share_weight>(
        {"scheduler.fair_share_weight", "number", "10000",
         "order = \"priority\": the weight of the job's account's fair share, 2^-(its "
         "fair-share usage over its shares, as sched/fair_share.hpp defines it); 1 for an "
         "account that has used nothing."}),
    weight_key<&Config::scheduler, &Config::Scheduler::user_weight>(
        {"scheduler.user_weight", "number", "1",
         "order = \"priority\": the weight of the priority a job was submitted with."}),
    duration_key<&Config::scheduler, &Config::Scheduler::fair_share_half_life, 1>(
        {"scheduler.fair_share_half_life", "duration", "7-00:00:00",
         "How fast an account's past use fades from its fair share, as Slurm's "
         "PriorityDecayHalfLife: use this long ago counts half as much as use now."}),
    KeySpec{
        {"mpi.default", "string", "mpirun",
         "How `loom submit --mpi` (with no =MODE) starts an MPI job's ranks: \"pmix\" (Loom "
         "starts every rank, bound as placed, and serves it PMIx: any MPI built with PMIx; "
         "jobs of one node so far) or \"mpirun\" (Open MPI's mpirun on the first node, its "
         "daemons through loom-rsh). A job keeps the mode it was submitted with."},
        [](Config& config, const toml::node& value) {
          return one_of<&Config::mpi, &Config::Mpi::launch>(config, value, kMpiLaunches);
        },
        [](const Config& config) { return config.mpi.launch; },
    },
};

}  // namespace

std::span<const KeySpec> scheduler_keys() { return kSchedulerKeys; }

}  // namespace loom::config_detail
