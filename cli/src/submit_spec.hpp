// `loom submit`'s options, and `#LOOM` directives in a batch script, into a loom.v1.JobSpec.
// The same options either way, with Slurm's meanings where Slurm has the option; options on
// the command line override the script's directives. Bad input is refused here, naming the
// option, before anything reaches the controller (which checks again).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/proto/types.pb.h"

namespace loom::cli {

struct SubmitRequest {
  v1::JobSpec spec;
  std::string controller;   // --controller, when given
  unsigned array_size = 0;  // --array 1-N: N jobs, 0 without --array
  // Variables of the submitter's environment that --export ALL could not carry (a name that
  // is not UTF-8), as printable names: the CLI says so.
  std::vector<std::string> not_exported;
};

// args: the words after `loom submit`. cwd: the submit directory (the default for --chdir
// and for the output files). environment: the submitter's, for --export. read_script reads
// the batch script named by a lone positional argument.
Result<SubmitRequest> parse_submit(
    const std::vector<std::string>& args, const std::string& cwd,
    const std::map<std::string, std::string>& environment,
    const std::function<Result<std::string>(const std::string&)>& read_script);

// The options `loom submit` takes, as --help shows them.
std::string submit_help();

// The `#LOOM` directives of a script, as words: `#LOOM -n 4 -t 10` gives {"-n","4","-t","10"}.
// Directives end at the first line that is neither a comment nor blank, as in Slurm.
Result<std::vector<std::string>> script_directives(const std::string& script);

}  // namespace loom::cli
