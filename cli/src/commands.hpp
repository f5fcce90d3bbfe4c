// The loom command line: each subcommand registers its options on the app and returns
// the function main runs when the user chose it.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"

namespace loom::cli {

// What main hands every subcommand once options are parsed.
struct Context {
  Config config;
};

struct Command {
  CLI::App* app;  // the subcommand, owned by the top-level app
  std::function<Status(const Context&)> run;
};

Command add_topo(CLI::App& app);
Command add_bind(CLI::App& app);
Command add_config(CLI::App& app);
Command add_sim(CLI::App& app);
Command add_up(CLI::App& app);
Command add_acct(CLI::App& app);
std::vector<Command> add_job_commands(
    CLI::App& app);  // queue, show, cancel, watch; submit for --help
std::vector<Command> add_node_commands(CLI::App& app);  // nodes, drain, resume
std::vector<Command> add_bb_commands(CLI::App& app);    // bb create, bb list, bb destroy
// `loom submit WORDS`: its own parser reads them (options, `--`, a script's #LOOM lines),
// since CLI11 would swallow the `--` that separates the command.
Status run_submit(const std::vector<std::string>& words, const Context& context);

}  // namespace loom::cli
