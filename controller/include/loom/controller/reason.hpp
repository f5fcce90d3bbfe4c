// Why a job is in its state, as a type: a code and the detail that goes with it, never a
// string to compare. Shown as one line in the words Slurm's users know ("NonZeroExitCode",
// "TimeLimit"), the detail after a colon ("StageInFailed: storage:/in.h5 into node0's
// slice: no such file").
#pragma once

#include <string>

#include "loom/proto/types.pb.h"

namespace loom::controller {

struct Reason {
  Reason() = default;
  Reason(v1::Reason c, std::string d = {}) : code(c), detail(std::move(d)) {}

  v1::Reason code = v1::REASON_NONE;
  std::string detail;

  std::string text() const;
  friend bool operator==(const Reason&, const Reason&) = default;
};

}  // namespace loom::controller
