#include "loom/sched/configured.hpp"

namespace loom::sched {

Result<SchedulerOptions> scheduler_options(const Config::Scheduler& config,
                                           std::vector<Config::Account> accounts,
                                           std::vector<Config::Qos> qos) {
  SchedulerOptions options;
  options.accounts = std::move(accounts);
  options.qos = std::move(qos);
  options.fair_share_half_life = config.fair_share_half_life;
  if (config.order == "priority") {
    options.order = make_multifactor_order({config.age_weight, config.max_age, config.size_weight,
                                            config.fair_share_weight, config.user_weight});
  } else {
    options.order = LOOM_TRY(make_order(config.order));
  }
  options.backfill = config.backfill == "conservative"
                         ? make_conservative_backfill(config.backfill_depth)
                         : LOOM_TRY(make_backfill(config.backfill));
  return options;
}

}  // namespace loom::sched
