// loom: the user's and admin's command line. Parses, loads the configuration, runs one
// subcommand; an Error becomes one line on stderr and exit status 1 (2 for bad usage).
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "commands.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/programs.hpp"

namespace {

int fail(const loom::Error& error) {
  (void)std::fprintf(stderr, "loom: %s\n", error.to_string().c_str());
  return 1;
}

}  // namespace

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  CLI::App app{"loom: HPC jobs on NUMA-pinned cores with NVMe burst buffers and RDMA staging"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(LOOM_VERSION));
  std::optional<std::filesystem::path> config_file;
  app.add_option("--config", config_file, loom::kConfigHelp);

  std::vector<loom::cli::Command> commands = loom::cli::add_job_commands(app);
  for (loom::cli::Command& command : loom::cli::add_node_commands(app))
    commands.push_back(std::move(command));
  for (loom::cli::Command& command : loom::cli::add_bb_commands(app))
    commands.push_back(std::move(command));
  for (auto add : {loom::cli::add_topo, loom::cli::add_bind, loom::cli::add_config,
                   loom::cli::add_sim, loom::cli::add_up, loom::cli::add_acct}) {
    commands.push_back(add(app));
  }

  // Listed for --help only: `loom fabric WORDS` runs loom-fabric (see fabric_main.cpp), and
  // `loom stage WORDS` loom-stage (stage_main.cpp).
  app.add_subcommand(
      "fabric", "The RDMA data plane: loom fabric info [--json] lists what libfabric offers here");
  app.add_subcommand(
      "stage",
      "Copy a file between here and a storage agent's export over the fabric, with a progress "
      "bar: loom stage SRC DST, one of them NODE:/path");

  int first = 1;
  std::optional<std::filesystem::path> submit_config;
  if (first + 1 < argc && std::string_view(argv[first]) == "--config") {
    submit_config = argv[first + 1];
    first += 2;
  }
  if (first < argc &&
      (std::string_view(argv[first]) == "fabric" || std::string_view(argv[first]) == "stage")) {
    auto program = loom::find_program(std::string("loom-") + argv[first], "cli");
    if (!program) return fail(program.error());
    std::vector<char*> args{const_cast<char*>(program->c_str())};
    if (submit_config)
      args.insert(args.end(),
                  {const_cast<char*>("--config"), const_cast<char*>(submit_config->c_str())});
    args.insert(args.end(), argv + first + 1, argv + argc);
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    return fail(
        loom::Error(loom::ErrorCode::kInternal,
                    fmt::format("cannot run {}: {}", program->string(), loom::errno_text(errno))));
  }
  // `loom [--config FILE] submit WORDS`: the words go to run_submit as they are.
  if (first < argc && std::string_view(argv[first]) == "submit") {
    auto config = loom::start_program("loom", submit_config);
    if (!config) return fail(config.error());
    const loom::cli::Context context{std::move(*config)};
    if (auto status = loom::cli::run_submit({argv + first + 1, argv + argc}, context); !status)
      return fail(status.error());
    return 0;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports an unknown first word as a missing subcommand; say what it was.
    if (!app.remaining().empty() && app.get_subcommands().empty()) {
      (void)std::fprintf(stderr, "loom: unknown command '%s' (see loom --help)\n",
                         app.remaining().front().c_str());
    } else {
      (void)std::fprintf(stderr, "loom: %s (see loom --help)\n", e.what());
    }
    return 2;
  }

  auto config = loom::start_program("loom", config_file);
  if (!config) return fail(config.error());

  const loom::cli::Context context{std::move(*config)};
  for (const auto& command : commands) {
    if (!command.app->parsed()) continue;
    if (auto status = command.run(context); !status) return fail(status.error());
    return 0;
  }
  return 2;  // unreachable: require_subcommand(1) made CLI11 refuse the line
}
