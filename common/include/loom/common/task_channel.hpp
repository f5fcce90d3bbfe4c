// The descriptor on which a task the agent starts finds its channel to the agent, when it
// has one (a job's PMIx server, loom-pmix): the agent spawns the keeper with it there, and
// the keeper hands it on to the task, open across exec.
#pragma once

namespace loom {

inline constexpr int kTaskChannelFd = 4;

}  // namespace loom
