// loom submit / queue / show / cancel / watch: the user's side of the controller's job service.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "job_json.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/printable.hpp"
#include "submit_spec.hpp"

extern char** environ;

namespace loom::cli {

// The controller as `loom` reaches it (loom/client/client.hpp).
using namespace loom::client;

namespace {

std::string when(std::int64_t seconds) {
  if (seconds == 0) return "-";
  const std::time_t t = seconds;
  std::tm local{};
  std::array<char, 32> text{};
  if (std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%S", ::localtime_r(&t, &local)) == 0)
    return "-";  // not a time localtime can write
  return text.data();
}

nlohmann::json job_json(const v1::JobInfo& j) {
  nlohmann::json placement = nlohmann::json::array();
  for (const v1::PlacedNode& node : j.placement().nodes()) {
    for (const v1::PlacedRank& rank : node.ranks()) {
      // bound_*: as the node's agent applied them; null until it has reported.
      placement.push_back(
          {{"rank", rank.rank()},
           {"node", node.node()},
           {"cores", rank.cores()},
           {"numa", rank.numa()},
           {"bound_cpus", rank.has_bound() ? nlohmann::json(rank.bound().cpus()) : nullptr},
           {"bound_numa", rank.has_bound() ? nlohmann::json(rank.bound().numa()) : nullptr}});
    }
  }
  nlohmann::json staging = nlohmann::json::array();
  for (const v1::StagingFile& f : j.staging()) {
    staging.push_back({{"direction", f.direction()},
                       {"source", f.source()},
                       {"dest", f.dest()},
                       {"node", f.node()},
                       {"bytes_done", f.bytes_done()},
                       {"bytes_total", f.bytes_total()},
                       {"rate_bps", f.rate_bps()},
                       {"state", f.state()},
                       {"error", f.error()},
                       {"notes", std::vector<std::string>(f.notes().begin(), f.notes().end())}});
  }
  nlohmann::json out = job_identity(j);
  out.update({{"nodes", j.nodes()},
              {"tasks", j.tasks()},
              {"submit_time", j.submit_time()},
              {"start_time", or_null(j.has_start_time(), j.start_time())},
              {"placement", placement},
              {"staging", staging},
              // What the kernel counted in the job's cgroups; null until it has ended.
              {"usage", j.has_usage() ? nlohmann::json{{"cpu_seconds", j.usage().cpu_seconds()},
                                                       {"memory_peak_bytes",
                                                        or_null(j.usage().has_memory_peak_bytes(),
                                                                j.usage().memory_peak_bytes())}}
                                      : nlohmann::json(nullptr)},
              {"times",
               {{"submit", j.submit_time()},
                {"start", or_null(j.has_start_time(), j.start_time())},
                {"end", or_null(j.has_end_time(), j.end_time())}}}});
  return out;
}

std::string state_line(const v1::JobInfo& j) {
  std::string line = fmt::format("job {} ({}) of {}: {}", job_ref(j), printable(j.name()), j.user(),
                                 v1::JobState_Name(j.state()));
  if (!j.reason().empty()) line += " (" + printable(j.reason()) + ")";
  if (j.has_exit_code()) line += fmt::format(", exit code {}", j.exit_code());
  if (j.has_signal()) line += fmt::format(" (signal {})", j.signal());
  return line;
}

}  // namespace

Status run_submit(const std::vector<std::string>& words, const Context& context) {
  const auto end_of_options = std::ranges::find(words, "--");
  if (std::find(words.begin(), end_of_options, "--help") != end_of_options ||
      std::find(words.begin(), end_of_options, "-h") != end_of_options) {
    std::cout << submit_help();
    return {};
  }
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    if (auto eq = kv.find('='); eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::array<char, 4096> cwd{};
  if (::getcwd(cwd.data(), cwd.size()) == nullptr)
    return make_error(ErrorCode::kInternal, "getcwd failed");
  auto read_script = [](const std::string& path) -> Result<std::string> {
    std::ifstream in(path);
    if (!in)
      return make_error(ErrorCode::kNotFound, fmt::format("cannot read the batch script {}", path));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  SubmitRequest parsed = LOOM_TRY(parse_submit(words, cwd.data(), env, read_script));
  for (const std::string& name : parsed.not_exported)
    std::cerr << fmt::format("loom: not exported: {} (a variable's name must be UTF-8)\n", name);
  parsed.spec.set_umask(current_umask());
  const Client client = LOOM_TRY(connect(parsed.controller, context.config));
  v1::SubmitRequest request;
  v1::Caller caller = LOOM_TRY(me());
  *request.mutable_caller() = std::move(caller);
  *request.mutable_spec() = std::move(parsed.spec);
  request.set_array_size(parsed.array_size);
  v1::SubmitReply reply;
  grpc::ClientContext call;
  if (grpc::Status s = client.stub->Submit(&call, request, &reply); !s.ok())
    return std::unexpected(client.error(s));
  // The job's id; an array's id names its elements ID_1 ... ID_N.
  std::cout << reply.job() << '\n';
  return {};
}

std::vector<Command> add_job_commands(CLI::App& app) {
  auto controller = std::make_shared<std::string>();
  std::vector<Command> commands;

  // Listed for --help only: main() hands `loom submit`'s words to run_submit untouched.
  app.add_subcommand(
      "submit",
      "Submit a job: loom submit [OPTIONS] -- CMD ARGS, or loom submit [OPTIONS] SCRIPT "
      "(Slurm's sbatch options; #LOOM lines in a script); prints the job id");

  auto* queue =
      app.add_subcommand("queue", "List your pending and running jobs (every user's for an admin)");
  auto queue_json = std::make_shared<bool>(false);
  auto queue_all = std::make_shared<bool>(false);
  queue->add_flag("--json", *queue_json, "Print one JSON object");
  queue->add_flag("--all", *queue_all, "Jobs that have ended too");
  queue->add_option("--controller", *controller, kControllerHelp);
  commands.push_back({queue, [queue_json, queue_all, controller](const Context& context) -> Status {
                        const Client client = LOOM_TRY(connect(*controller, context.config));
                        v1::ListRequest request;
                        request.set_include_ended(*queue_all);
                        v1::ListReply reply;  // every page's jobs
                        for (std::uint64_t after = 0;;) {
                          *request.mutable_caller() = LOOM_TRY(me());  // a credential decodes once
                          request.set_after(after);
                          v1::ListReply page;
                          grpc::ClientContext call;
                          if (grpc::Status s = client.stub->List(&call, request, &page); !s.ok())
                            return std::unexpected(client.error(s));
                          for (v1::JobInfo& j : *page.mutable_jobs())
                            *reply.add_jobs() = std::move(j);
                          if (page.next_after() == 0) {
                            warn_read_only(page.read_only());
                            break;
                          }
                          after = page.next_after();
                        }
                        if (*queue_json) {
                          nlohmann::json jobs = nlohmann::json::array();
                          for (const v1::JobInfo& j : reply.jobs()) {
                            const nlohmann::json full = job_json(j);
                            nlohmann::json entry;
                            for (const char* key :
                                 {"id", "array_job", "array_index", "name", "user", "account",
                                  "state", "reason", "reason_code", "nodes", "tasks", "submit_time",
                                  "start_time"}) {
                              entry[key] = full[key];
                            }
                            entry["end_time"] = full["times"]["end"];
                            jobs.push_back(std::move(entry));
                          }
                          std::cout << nlohmann::json{{"jobs", jobs}}.dump(2) << '\n';
                          return {};
                        }
                        // As squeue's, the reason last: why a pending job waits, why one ended as
                        // it did.
                        constexpr std::string_view kRow =
                            "{:>10} {:<16} {:<12} {:<12} {:<11} {:>5} {:>5} {:<19} {:<19} {}\n";
                        std::cout << fmt::format(kRow, "ID", "NAME", "USER", "ACCOUNT", "STATE",
                                                 "NODES", "TASKS", "SUBMIT", "START", "REASON");
                        for (const v1::JobInfo& j : reply.jobs()) {
                          std::cout << fmt::format(
                              kRow, job_ref(j), printable(j.name()).substr(0, 16), j.user(),
                              printable(j.account()).substr(0, 12), v1::JobState_Name(j.state()),
                              j.nodes(), j.tasks(), when(j.submit_time()),
                              when(j.has_start_time() ? j.start_time() : 0), printable(j.reason()));
                        }
                        return {};
                      }});

  auto* show = app.add_subcommand(
      "show", "Show a job: state, reason, exit status, placement and binding, times");
  auto show_id = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  show->add_option("job", *show_id, "Job id (12, or 12_3 for an array's element)")->required();
  show->add_flag("--json", *show_json, "Print one JSON object");
  show->add_option("--controller", *controller, kControllerHelp);
  commands.push_back(
      {show, [show_id, show_json, controller](const Context& context) -> Status {
         const v1::JobRequest request = LOOM_TRY(job_request(*show_id));
         const Client client = LOOM_TRY(connect(*controller, context.config));
         v1::JobInfo reply;
         grpc::ClientContext call;
         if (grpc::Status s = client.stub->Show(&call, request, &reply); !s.ok())
           return std::unexpected(client.error(s));
         warn_read_only(reply.read_only());
         const nlohmann::json j = job_json(reply);
         if (*show_json) {
           std::cout << j.dump(2) << '\n';
           return {};
         }
         std::cout << state_line(reply) << '\n';
         std::cout << fmt::format("submitted {}, started {}, ended {}\n", when(reply.submit_time()),
                                  when(reply.has_start_time() ? reply.start_time() : 0),
                                  when(reply.has_end_time() ? reply.end_time() : 0));
         if (reply.has_usage()) {
           std::cout << fmt::format("used {:.2f} s of CPU, peak memory {}\n",
                                    reply.usage().cpu_seconds(),
                                    reply.usage().has_memory_peak_bytes()
                                        ? format_bytes(Bytes(reply.usage().memory_peak_bytes()))
                                        : std::string("not measured"));
         }
         for (const nlohmann::json& rank : j["placement"]) {
           std::string line = fmt::format(
               "  rank {} on {}: cores {} memory on NUMA {}", rank["rank"].get<unsigned>(),
               rank["node"].get<std::string>(), rank["cores"].dump(), rank["numa"].get<unsigned>());
           if (!rank["bound_cpus"].is_null()) {
             line += fmt::format("; bound to PUs {} NUMA {}", rank["bound_cpus"].dump(),
                                 rank["bound_numa"].dump());
           }
           std::cout << line << '\n';
         }
         for (const v1::StagingFile& f : reply.staging()) {
           std::string line =
               fmt::format("  stage-{} {} -> {}: {}, {}/{}", f.direction(), printable(f.source()),
                           printable(f.dest()), f.state(), format_bytes(Bytes(f.bytes_done())),
                           format_bytes(Bytes(f.bytes_total())));
           if (f.rate_bps() > 0)
             line += fmt::format(" at {}/s",
                                 format_bytes(Bytes(static_cast<std::uint64_t>(f.rate_bps()))));
           if (f.state() == "running" && f.rate_bps() > 0 && f.bytes_total() > f.bytes_done()) {
             line +=
                 fmt::format(", {:.0f} s left",
                             static_cast<double>(f.bytes_total() - f.bytes_done()) / f.rate_bps());
           }
           if (!f.error().empty()) line += ": " + printable(f.error());
           std::cout << line << '\n';
           for (const std::string& note : f.notes())
             std::cout << "    note: " << printable(note) << '\n';
         }
         return {};
       }});

  auto* cancel = app.add_subcommand("cancel",
                                    "Cancel a job (SIGTERM, then SIGKILL after "
                                    "controller.kill_grace); an array's id cancels all of it");
  auto cancel_id = std::make_shared<std::string>();
  cancel->add_option("job", *cancel_id, "Job id (12, or 12_3 for an array's element)")->required();
  cancel->add_option("--controller", *controller, kControllerHelp);
  commands.push_back({cancel, [cancel_id, controller](const Context& context) -> Status {
                        const v1::JobRequest request = LOOM_TRY(job_request(*cancel_id));
                        const Client client = LOOM_TRY(connect(*controller, context.config));
                        v1::CancelReply reply;
                        grpc::ClientContext call;
                        if (grpc::Status s = client.stub->Cancel(&call, request, &reply); !s.ok())
                          return std::unexpected(client.error(s));
                        return {};
                      }});

  auto* watch = app.add_subcommand("watch",
                                   "Follow a job: a line at each change of state, until it ends; "
                                   "exits 0 if it COMPLETED, 1 otherwise");
  auto watch_id = std::make_shared<std::string>();
  auto watch_json = std::make_shared<bool>(false);
  watch->add_option("job", *watch_id, "Job id (12, or 12_3 for an array's element)")->required();
  watch->add_flag("--json", *watch_json, "One JSON object per line, as loom show --json prints it");
  watch->add_option("--controller", *controller, kControllerHelp);
  commands.push_back(
      {watch, [watch_id, watch_json, controller](const Context& context) -> Status {
         const v1::JobRequest request = LOOM_TRY(job_request(*watch_id));
         const Client client = LOOM_TRY(connect(*controller, context.config));
         grpc::ClientContext call;
         auto stream = client.stub->Watch(&call, request);
         v1::JobInfo last;
         std::string printed;  // text mode prints a line when it would differ from the last
         for (v1::JobInfo info; stream->Read(&info); last = info) {
           std::string line = *watch_json ? job_json(info).dump() : state_line(info);
           if (line == printed) continue;
           std::cout << line << '\n' << std::flush;
           printed = std::move(line);
         }
         if (grpc::Status s = stream->Finish(); !s.ok()) return std::unexpected(client.error(s));
         if (last.state() != v1::COMPLETED) {
           return make_error(
               ErrorCode::kFailedPrecondition,
               fmt::format("job {} ended {}", job_ref(last), v1::JobState_Name(last.state())));
         }
         return {};
       }});
  return commands;
}

}  // namespace loom::cli
