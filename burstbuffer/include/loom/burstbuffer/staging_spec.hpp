// The grammar of --stage-in and --stage-out, checked where a job is submitted (the CLI and
// again the controller) and read where it is staged (the agents).
//
//   stage-in   NODE:/path[:/group/dset[,/other]]   a file in NODE's export ("/" is its root),
//                                                  optionally only those HDF5 datasets
//   stage-out  SLICEPATH:NODE:/dir/                a file of the slice, to a directory of
//                                                  NODE's export
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::burstbuffer {

struct StageIn {
  std::string node;
  std::string path;                   // absolute in the export, no "." or ".." component
  std::vector<std::string> datasets;  // empty: the whole file
  std::string name() const;           // what it is called in the slice: the path's base name
};

struct StageOut {
  std::string slice_path;  // relative to the slice, no "." or ".." component
  std::string node;
  std::string dir;  // absolute in the export, a directory
};

Result<StageIn> parse_stage_in(std::string_view text);
Result<StageOut> parse_stage_out(std::string_view text);

// Every --stage-in and --stage-out of a job parses, and asks for what can be staged.
Status check_staging(std::span<const std::string> stage_in, std::span<const std::string> stage_out);

}  // namespace loom::burstbuffer
