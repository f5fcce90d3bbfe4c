// loom bind --cores LIST [--numa N] [--xml FILE | --synthetic SPEC] -- CMD ARGS
// Binds itself as asked, then becomes CMD, which inherits the binding.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>

#include "commands.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/index_list.hpp"
#include "loom/hwtopo/binding.hpp"
#include "topology_source.hpp"

namespace loom::cli {

Command add_bind(CLI::App& app) {
  auto* command = app.add_subcommand(
      "bind",
      "Run a command bound to cores (logical indexes) and its memory to a NUMA domain. "
      "With --xml or --synthetic the cores are those of a simulated node, mapped onto this "
      "machine's (placed PU k -> real PU k mod P, domain n -> real domain n mod D).");
  struct Options {
    std::string cores;
    std::optional<unsigned> numa;
    bool verbose = false;
    std::vector<std::string> argv;
  };
  auto options = std::make_shared<Options>();
  command->add_option("--cores", options->cores, "Cores by logical index, e.g. 0-3,8")->required();
  command->add_option("--numa", options->numa,
                      "NUMA domain (OS index) to bind memory to, strictly");
  auto source = add_topology_source_options(*command);
  command->add_flag("-v,--verbose", options->verbose,
                    "Print the placed and applied binding on stderr");
  command->add_option("command", options->argv, "The command and its arguments, after --")
      ->required();
  return {command, [options, source](const Context&) -> Status {
            std::vector<unsigned> cores =
                LOOM_TRY(with_context(parse_index_list(options->cores), "--cores"));
            auto simulated = [&]() -> Result<hwtopo::Binder> {
              hwtopo::Topology placed = LOOM_TRY(source->load());
              return hwtopo::Binder::for_simulated(std::move(placed));
            };
            hwtopo::Binder binder =
                LOOM_TRY(source->is_live() ? hwtopo::Binder::for_live_machine() : simulated());
            hwtopo::Binding binding = LOOM_TRY(binder.resolve(cores, options->numa));
            LOOM_TRY(binder.apply(binding));
            if (options->verbose) std::cerr << "loom bind: " << binding.describe() << '\n';
            const std::vector<char*> argv = exec_args(options->argv);
            ::execvp(argv[0], argv.data());
            // As env(1) and the shells do: 127 when the command cannot be found, 126 otherwise.
            const int error = errno;
            std::cerr << "loom: cannot run " << argv[0] << ": " << loom::errno_text(error) << '\n';
            ::_exit(error == ENOENT ? 127 : 126);
          }};
}

}  // namespace loom::cli
