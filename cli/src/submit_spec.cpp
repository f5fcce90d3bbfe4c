#include "submit_spec.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <filesystem>

#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/printable.hpp"
#include "loom/sched/job.hpp"

namespace loom::cli {

// The controller as `loom` reaches it (loom/client/client.hpp).
using namespace loom::client;

namespace {

// The options as typed; turned into a JobSpec once both sources are read.
struct Typed {
  std::string controller, name, output, error, chdir, export_vars, nodes, mem_per_task, time, bb,
      bb_persistent, account, qos, array, mpi;
  std::vector<std::string> dependency, stage_in, stage_out;
  unsigned tasks = 0, tasks_per_node = 0, cpus_per_task = 0;
  bool spread_numa = false, stage_out_all = false, exclusive = false, requeue = false;
  std::vector<std::string> positional;
};

// An option's value typed empty (`-t ""`) would be taken for the option not given: refused.
const CLI::Validator kGiven(
    [](const std::string& value) { return value.empty() ? "expected a value, not \"\"" : ""; }, "");
// Counts in decimal digits only: CLI11 alone takes " 2" and "0x10" (16).
const CLI::Validator kCount(
    [](const std::string& value) {
      return !value.empty() &&
                     std::ranges::all_of(value, [](char c) { return c >= '0' && c <= '9'; })
                 ? std::string()
                 : fmt::format("\"{}\" is not a whole number", value);
    },
    "");

void define(CLI::App& app, Typed& t) {
  app.add_option("--controller", t.controller, kControllerHelp)->check(kGiven);
  app.add_option("-J,--job-name", t.name, "Job name")->check(kGiven);
  app.add_option("-o,--output", t.output,
                 "stdout file (%j: job id, %N: node name, %t: rank, a file per rank); default "
                 "loom-%j.out in the submit directory")
      ->check(kGiven);
  app.add_option("-e,--error", t.error,
                 "stderr file (%j, %N, %t as for --output); default: with stdout")
      ->check(kGiven);
  app.add_option("--chdir", t.chdir, "Working directory of the job; default the submit directory")
      ->check(kGiven);
  app.add_option("--export", t.export_vars,
                 "Environment passed: ALL (default), NONE, or NAME[=VALUE],...")
      ->check(kGiven);
  app.add_option("-N,--nodes", t.nodes, "Nodes, N or MIN-MAX")->check(kGiven);
  // 0 would be taken for "not given" (one task, one core): refused, as sbatch refuses it.
  app.add_option("-n,--ntasks", t.tasks, "Tasks (ranks)")
      ->check(kCount)
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--tasks-per-node", t.tasks_per_node, "Tasks on each node")
      ->check(kCount)
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("-c,--cpus-per-task", t.cpus_per_task, "Cores per task")
      ->check(kCount)
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--mem-per-task", t.mem_per_task, "Memory per task, e.g. 4G")->check(kGiven);
  app.add_flag("--spread-numa", t.spread_numa, "Let a task's cores span NUMA domains");
  app.add_option("-t,--time", t.time,
                 "Walltime: M, M:S, H:M:S, D-H:M:S, or 90m, 2h; default 1:00:00; at most 365 "
                 "days")
      ->check(kGiven);
  app.add_option("--bb", t.bb,
                 "A burst-buffer slice of this size on each node, e.g. 100G, at $LOOM_BB_DIR")
      ->check(kGiven);
  app.add_option("--bb-persistent", t.bb_persistent,
                 "Use your persistent burst buffer NAME (loom bb): the job runs on "
                 "its node and sees it at $LOOM_BB_PERSISTENT_DIR")
      ->check(kGiven);
  app.add_option("--stage-in", t.stage_in,
                 "NODE:/path: a file of storage agent NODE's export, copied into every "
                 "node's slice before the job starts (needs --bb; repeatable)")
      ->check(kGiven);
  app.add_option("--stage-out", t.stage_out,
                 "SLICEPATH:NODE:/dir/: a file of the slice, copied into that directory "
                 "of NODE's export after the job ends (needs --bb; repeatable)")
      ->check(kGiven);
  app.add_flag("--stage-out-all", t.stage_out_all,
               "Stage out from every node (files named NAME.NODE), not only the first");
  app.add_option("-A,--account", t.account, "Account charged (fair share)")->check(kGiven);
  app.add_option("-q,--qos", t.qos,
                 "Quality of service: a higher one's jobs go first and may preempt those of the "
                 "QOS it lists (default: normal)")
      ->check(kGiven);
  app.add_option("-d,--dependency", t.dependency,
                 "afterok:ID[:ID...] or afterany:ID[:ID...], comma-separated")
      ->check(kGiven);
  app.add_flag("--exclusive", t.exclusive, "Whole nodes, shared with no other job");
  app.add_flag("--requeue", t.requeue, "Requeue the job when its node fails");
  app.add_option("-a,--array", t.array, "1-N: N jobs ID_1 ... ID_N, each with LOOM_ARRAY_INDEX")
      ->check(kGiven);
  app.add_flag("--mpi{site}", t.mpi,
               "Launch the command as an MPI job, each rank bound as placed: --mpi=pmix, Loom "
               "starts every rank and serves it PMIx (any MPI built with PMIx; one node so "
               "far); --mpi=mpirun, Open MPI's mpirun on the first node and its daemons on the "
               "others through loom-rsh; --mpi alone, the site's mpi.default");
  app.add_option("script", t.positional, "Batch script (or give the command after --)");
}

Status parse_words(const std::vector<std::string>& words, Typed& t, std::string_view source) {
  CLI::App app;
  define(app, t);
  std::vector<std::string> reversed(words.rbegin(), words.rend());  // CLI11 takes them in reverse
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return make_error(ErrorCode::kInvalidArgument, fmt::format("{}{}", source, e.what()));
  }
  return {};
}

template <typename Count = unsigned>
Result<Count> parse_count(std::string_view text, std::string_view option) {
  Count value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} \"{}\": expected a whole number", option, text));
  }
  return value;
}

Status parse_dependencies(const std::vector<std::string>& items, v1::JobSpec& spec) {
  for (const std::string& item : items) {
    for (std::size_t start = 0; start <= item.size();) {
      const std::size_t comma = std::min(item.find(',', start), item.size());
      const std::string one = item.substr(start, comma - start);
      const std::size_t colon = one.find(':');
      const std::string kind = one.substr(0, colon);
      if (colon == std::string::npos || (kind != "afterok" && kind != "afterany")) {
        return make_error(
            ErrorCode::kInvalidArgument,
            fmt::format("--dependency \"{}\": expected afterok:ID or afterany:ID", one));
      }
      for (std::size_t p = colon + 1; p <= one.size();) {
        const std::size_t next = std::min(one.find(':', p), one.size());
        const auto id =
            LOOM_TRY(parse_count<std::uint64_t>(one.substr(p, next - p), "--dependency"));
        if (id == 0) {
          return make_error(ErrorCode::kInvalidArgument,
                            fmt::format("--dependency \"{}\": job 0 cannot exist", one));
        }
        auto* dep = spec.add_dependencies();
        dep->set_kind(kind == "afterok" ? v1::Dependency::AFTER_OK : v1::Dependency::AFTER_ANY);
        dep->set_job(id);
        p = next + 1;
      }
      start = comma + 1;
    }
  }
  return {};
}

std::string absolute(const std::string& path, const std::string& base) {
  if (path.empty() || path.front() == '/') return path;
  return (std::filesystem::path(base) / path).lexically_normal().string();
}

}  // namespace

std::string submit_help() {
  CLI::App app{
      "Submit a job. Options may also stand on #LOOM lines at the top of a batch script; "
      "the command line overrides them.",
      "loom submit"};
  Typed t;
  define(app, t);
  app.footer(
      "Usage: loom submit [OPTIONS] -- CMD ARGS | loom submit [OPTIONS] SCRIPT. Prints the job "
      "id.");
  return app.help();
}

Result<std::vector<std::string>> script_directives(const std::string& script) {
  std::vector<std::string> words;
  std::size_t line_start = 0;
  for (std::size_t line_no = 1; line_start < script.size(); ++line_no) {
    std::size_t end = script.find('\n', line_start);
    if (end == std::string::npos) end = script.size();
    std::string_view line(script.data() + line_start, end - line_start);
    line_start = end + 1;
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) continue;
    line.remove_prefix(first);
    if (line.front() != '#') break;  // the first command ends the directives
    if (!line.starts_with("#LOOM")) continue;
    line.remove_prefix(5);
    // Words split on blanks, with '...' and "..." quoting.
    std::string word;
    bool in_word = false;
    char quote = 0;
    for (char c : line) {
      if (quote != 0) {
        if (c == quote) {
          quote = 0;
        } else {
          word += c;
        }
      } else if (c == '\'' || c == '"') {
        quote = c;
        in_word = true;
      } else if (c == ' ' || c == '\t' || c == '\r') {
        if (in_word) words.push_back(std::exchange(word, {}));
        in_word = false;
      } else {
        word += c;
        in_word = true;
      }
    }
    if (quote != 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("script line {}: unterminated {} quote", line_no, quote));
    }
    if (in_word) words.push_back(word);
  }
  return words;
}

Result<SubmitRequest> parse_submit(
    const std::vector<std::string>& args, const std::string& cwd,
    const std::map<std::string, std::string>& environment,
    const std::function<Result<std::string>(const std::string&)>& read_script) {
  std::vector<std::string> options(args.begin(), std::ranges::find(args, "--"));
  std::vector<std::string> command;
  if (options.size() < args.size())
    command.assign(args.begin() + static_cast<std::ptrdiff_t>(options.size()) + 1, args.end());

  Typed t;
  LOOM_TRY(parse_words(options, t, ""));
  std::string script;
  if (!t.positional.empty()) {
    if (!command.empty() || t.positional.size() > 1) {
      return make_error(ErrorCode::kInvalidArgument,
                        "give either a batch SCRIPT or -- CMD ARGS, not both");
    }
    script = LOOM_TRY(read_script(absolute(t.positional.front(), cwd)));
    const std::vector<std::string> directives = LOOM_TRY(script_directives(script));
    // Directives first, then the command line again: what is typed overrides the script.
    Typed merged;
    LOOM_TRY(parse_words(directives, merged, "#LOOM line: "));
    LOOM_TRY(parse_words(options, merged, ""));
    t = std::move(merged);
    command = {absolute(t.positional.front(), cwd)};
  }
  if (command.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "nothing to run: give -- CMD ARGS or a batch SCRIPT");
  }
  if (command.front().empty())
    return make_error(ErrorCode::kInvalidArgument, "nothing to run: the command is \"\"");

  SubmitRequest out;
  out.controller = t.controller;
  v1::JobSpec& spec = out.spec;
  for (const std::string& word : command) spec.add_argv(word);
  spec.set_script(script);
  spec.set_name(!t.name.empty() ? t.name
                                : std::filesystem::path(command.front()).filename().string());
  spec.set_chdir(absolute(t.chdir.empty() ? cwd : t.chdir, cwd));
  spec.set_stdout_path(absolute(t.output.empty() ? "loom-%j.out" : t.output, spec.chdir()));
  spec.set_stderr_path(t.error.empty() ? spec.stdout_path() : absolute(t.error, spec.chdir()));

  unsigned nodes_min = 0, nodes_max = 0;
  if (!t.nodes.empty()) {
    const std::size_t dash = t.nodes.find('-');
    auto min = parse_count(t.nodes.substr(0, dash), "--nodes");
    auto max = dash == std::string::npos ? min : parse_count(t.nodes.substr(dash + 1), "--nodes");
    nodes_min = min.value_or(0);
    nodes_max = max.value_or(0);
    if (nodes_min == 0 || nodes_max < nodes_min) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("--nodes \"{}\": expected N or MIN-MAX with 1 <= MIN <= MAX", t.nodes));
    }
  }
  spec.set_nodes_min(nodes_min);
  spec.set_nodes_max(nodes_max);
  spec.set_tasks_per_node(t.tasks_per_node);
  unsigned tasks = t.tasks;
  if (tasks == 0)
    tasks = nodes_min != 0 ? nodes_min * std::max(1u, t.tasks_per_node)
                           : std::max(1u, t.tasks_per_node);
  spec.set_tasks(tasks);
  spec.set_cpus_per_task(t.cpus_per_task == 0 ? 1 : t.cpus_per_task);
  if (!t.mem_per_task.empty()) {
    Bytes mem = LOOM_TRY(with_context(parse_bytes(t.mem_per_task), "--mem-per-task"));
    spec.set_mem_per_task(mem.count());
  }
  if (!t.bb.empty()) {
    Bytes bb = LOOM_TRY(with_context(parse_bytes(t.bb), "--bb"));
    spec.set_bb_per_node(bb.count());
  }
  std::chrono::seconds walltime = std::chrono::hours(1);
  if (!t.time.empty()) walltime = LOOM_TRY(with_context(parse_duration(t.time), "--time"));
  if (walltime.count() <= 0)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--time \"{}\": must be positive", t.time));
  if (walltime > sched::kMaxWalltime) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("--time \"{}\": at most {}", t.time, format_duration(sched::kMaxWalltime)));
  }
  spec.set_walltime_s(walltime.count());
  spec.set_spread_numa(t.spread_numa);
  spec.set_exclusive(t.exclusive);
  spec.set_requeue(t.requeue);
  if (!t.mpi.empty()) {
    spec.set_mpi(true);
    if (t.mpi == "pmix") {
      spec.set_mpi_launch(v1::MPI_LAUNCH_PMIX);
    } else if (t.mpi == "mpirun") {
      spec.set_mpi_launch(v1::MPI_LAUNCH_MPIRUN);
    } else if (t.mpi != "site") {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--mpi=\"{}\": takes pmix or mpirun (--mpi alone: the "
                                    "site's mpi.default)",
                                    printable(t.mpi)));
    }
  }
  // The job's command, paths and environment are bytes; these name things the cluster knows
  // (an account, a buffer, an export's files) and travel as text, which must be UTF-8.
  const auto text = [](std::string_view option, const std::string& value) -> Status {
    if (is_utf8(value)) return {};
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} \"{}\": not UTF-8", option, printable(value)));
  };
  LOOM_TRY(text("--account", t.account));
  LOOM_TRY(text("--qos", t.qos));
  LOOM_TRY(text("--bb-persistent", t.bb_persistent));
  spec.set_account(t.account);
  spec.set_qos(t.qos);
  spec.set_bb_persistent(t.bb_persistent);
  for (const std::string& s : t.stage_in) {
    LOOM_TRY(text("--stage-in", s));
    *spec.add_stage_in_files() = LOOM_TRY(burstbuffer::parse_stage_in(s));
  }
  for (const std::string& s : t.stage_out) {
    LOOM_TRY(text("--stage-out", s));
    *spec.add_stage_out_files() = LOOM_TRY(burstbuffer::parse_stage_out(s));
  }
  spec.set_stage_out_all(t.stage_out_all);
  LOOM_TRY(parse_dependencies(t.dependency, spec));

  if (!t.array.empty()) {
    if (!t.array.starts_with("1-")) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--array \"{}\": expected 1-N", t.array));
    }
    out.array_size = LOOM_TRY(parse_count(t.array.substr(2), "--array"));
    if (out.array_size == 0 || out.array_size > sched::kMaxArraySize) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("--array \"{}\": N must be 1 to {}", t.array, sched::kMaxArraySize));
    }
  }

  // --export: ALL, NONE, or a list of NAME (from the submitter) and NAME=VALUE, which may
  // start with ALL.
  auto& env = *spec.mutable_environment();
  const std::string exports = t.export_vars.empty() ? "ALL" : t.export_vars;
  for (std::size_t start = 0; start <= exports.size();) {
    const std::size_t comma = std::min(exports.find(',', start), exports.size());
    const std::string item = exports.substr(start, comma - start);
    start = comma + 1;
    if (item == "ALL") {
      for (const auto& [k, v] : environment) {
        if (is_utf8(k)) {
          env[k] = v;
        } else {
          out.not_exported.push_back(printable(k));  // a name travels as text: said, not sent
        }
      }
    } else if (item == "NONE") {
      if (exports != "NONE")
        return make_error(ErrorCode::kInvalidArgument, "--export: NONE stands alone");
    } else if (!is_utf8(item.substr(0, item.find('=')))) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format(R"(--export "{}": a variable's name must be UTF-8)",
                                    printable(item.substr(0, item.find('=')))));
    } else if (const std::size_t eq = item.find('='); eq != std::string::npos && eq > 0) {
      env[item.substr(0, eq)] = item.substr(eq + 1);
    } else if (!item.empty() && eq == std::string::npos) {
      if (auto it = environment.find(item); it != environment.end()) env[item] = it->second;
    } else {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format(R"(--export "{}": "{}" is not NAME or NAME=VALUE)", exports, item));
    }
  }
  return out;
}

}  // namespace loom::cli
