#include "loom/controller/reason.hpp"

#include <fmt/format.h>

namespace loom::controller {

std::string Reason::text() const {
  // A code whose words stand alone, and one whose detail follows after a colon.
  auto with = [this](std::string_view words) {
    return detail.empty() ? std::string(words) : fmt::format("{}: {}", words, detail);
  };
  switch (code) {
    case v1::REASON_NONE:
      return detail;  // none, or stored before reasons had codes: the detail is all of it
    case v1::REASON_NON_ZERO_EXIT_CODE:
      return "NonZeroExitCode";
    case v1::REASON_SIGNAL:
      return fmt::format("killed by signal {}", detail);
    case v1::REASON_OUT_OF_MEMORY:
      return "OutOfMemory";
    case v1::REASON_LAUNCH_FAILED:
      return with("LaunchFailed");
    case v1::REASON_STAGE_IN_FAILED:
      return with("StageInFailed");
    case v1::REASON_STAGE_OUT_FAILED:
      return with("StageOutFailed");
    case v1::REASON_TIME_LIMIT:
      return "TimeLimit";
    case v1::REASON_CANCELLED:
      return fmt::format("cancelled by {}", detail);
    case v1::REASON_NODE_FAIL:
      return with("NodeFail");
    case v1::REASON_REQUEUED:
      return with("requeued");
    case v1::REASON_DEPENDENCY_NEVER_SATISFIED:
      return "DependencyNeverSatisfied";
    case v1::REASON_BUFFER_DESTROYED:
      return with("BufferDestroyed");
    case v1::REASON_STATE_UNKNOWN:
      return with("StateUnknown");
    case v1::REASON_NODE_UNREACHABLE:
      return with("NodeUnreachable");
    case v1::REASON_PREEMPTED:
      return fmt::format("Preempted by job {}", detail);
    case v1::REASON_ACCOUNT_LIMIT:
      return with("AccountLimit");
    case v1::REASON_MPI_FAILED:
      return with("MpiFailed");
    default:
      return with(v1::Reason_Name(code));  // from a newer controller's store
  }
}

}  // namespace loom::controller
