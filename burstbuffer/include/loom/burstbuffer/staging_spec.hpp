// The grammar of --stage-in and --stage-out, parsed once where a job is submitted (the CLI)
// into loom.v1.StageIn and StageOut, which the controller checks again and the agents read.
//
//   stage-in   NODE:/path[:/group/dset[,/other]]   a file in NODE's export ("/" is its root),
//                                                  optionally only those HDF5 datasets
//   stage-out  SLICEPATH:NODE:/dir/                a file of the slice, to a directory of
//                                                  NODE's export
//
// The types name an export (export_name): today each storage node has one export, named as
// the node is (the testbed's is `storage`).
#pragma once

#include <string>
#include <string_view>

#include "loom/common/error.hpp"
#include "loom/proto/types.pb.h"

namespace loom::burstbuffer {

Result<v1::StageIn> parse_stage_in(std::string_view text);
Result<v1::StageOut> parse_stage_out(std::string_view text);

// As a user writes them: in refusals and in what `loom show` lists.
std::string text_of(const v1::StageIn& in);
std::string text_of(const v1::StageOut& out);

// What a staged-in file is called in the slice: its path's base name.
std::string slice_name(const v1::StageIn& in);

// Every file the job stages is well formed, whichever client sent it; a refusal names the
// option and the file as the user would write it.
Status check_staging(const v1::JobSpec& spec);

// Reads a Loom 0.1 spec's --stage-in and --stage-out text into the typed fields and clears
// the text; a spec without them is left as it is.
Status lift_legacy_staging(v1::JobSpec& spec);

}  // namespace loom::burstbuffer
