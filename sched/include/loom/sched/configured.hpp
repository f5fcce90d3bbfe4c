// The scheduler a configuration's [scheduler] section asks for: loomctld's, and what
// loom sim --config replays a trace with.
#pragma once

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {

// Its queue order, backfill and fair-share half-life, and the accounts and QOS given
// (loomctld's [[accounts]] and [[qos]]; loom sim replays none); an unknown name is an error
// naming it.
Result<SchedulerOptions> scheduler_options(const Config::Scheduler& config,
                                           std::vector<Config::Account> accounts = {},
                                           std::vector<Config::Qos> qos = {});

}  // namespace loom::sched
