// loom submit / queue / show / cancel: the user's side of the controller's job service.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <pwd.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/munge.hpp"
#include "loom/proto/loom.grpc.pb.h"
#include "submit_spec.hpp"

extern char** environ;

namespace loom::cli {

namespace {

// --controller, else LOOM_CONTROLLER, else controller.address.
std::string controller_address(const std::string& option, const Config& config) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("LOOM_CONTROLLER"); env != nullptr && *env != '\0') return env;
  return config.controller.address;
}

// This process, as a fresh Munge credential proves it.
Result<v1::Caller> me() {
  v1::Caller caller;
  std::string credential = LOOM_TRY(munge_credential());
  caller.set_credential(std::move(credential));
  return caller;
}

Error from_grpc(const grpc::Status& status, const std::string& address) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return Error(ErrorCode::kUnavailable, fmt::format("the controller at {} is unreachable: {}", address, status.error_message()));
  }
  return Error(status.error_code() == grpc::StatusCode::NOT_FOUND ? ErrorCode::kNotFound : ErrorCode::kInvalidArgument,
               status.error_message());
}

std::unique_ptr<v1::Controller::Stub> stub(const std::string& address) {
  return v1::Controller::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::string when(std::int64_t seconds) {
  if (seconds == 0) return "-";
  std::time_t t = seconds;
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", std::localtime(&t));
  return text;
}

nlohmann::json job_json(const v1::JobInfo& j) {
  nlohmann::json placement = nlohmann::json::array();
  if (!j.placement_json().empty()) {
    for (const nlohmann::json& node : nlohmann::json::parse(j.placement_json())) {
      for (const nlohmann::json& rank : node["ranks"]) {
        placement.push_back({{"rank", rank["rank"]}, {"node", node["node"]}, {"cores", rank["cores"]}, {"numa", rank["numa"]}});
      }
    }
  }
  auto optional = [](bool has, auto value) { return has ? nlohmann::json(value) : nlohmann::json(nullptr); };
  return {{"id", j.id()},
          {"name", j.name()},
          {"user", j.user()},
          {"state", v1::JobState_Name(j.state())},
          {"reason", j.reason()},
          {"exit_code", optional(j.has_exit_code(), j.exit_code())},
          {"signal", optional(j.has_signal(), j.signal())},
          {"nodes", j.nodes()},
          {"tasks", j.tasks()},
          {"submit_time", j.submit_time()},
          {"start_time", optional(j.has_start_time(), j.start_time())},
          {"placement", placement},
          {"times", {{"submit", j.submit_time()}, {"start", optional(j.has_start_time(), j.start_time())},
                     {"end", optional(j.has_end_time(), j.end_time())}}}};
}

Result<std::uint64_t> job_id(const std::string& text) {
  std::uint64_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return make_error(ErrorCode::kInvalidArgument, fmt::format("\"{}\" is not a job id", text));
  }
  return id;
}

// The request naming one job, as this user.
Result<v1::JobRequest> job_request(const std::string& id_text) {
  v1::JobRequest request;
  const std::uint64_t id = LOOM_TRY(job_id(id_text));
  request.set_job(id);
  v1::Caller caller = LOOM_TRY(me());
  *request.mutable_caller() = std::move(caller);
  return request;
}

}  // namespace

Status run_submit(const std::vector<std::string>& words, const Context& context) {
    const auto end_of_options = std::find(words.begin(), words.end(), "--");
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
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) return make_error(ErrorCode::kInternal, "getcwd failed");
    auto read_script = [](const std::string& path) -> Result<std::string> {
      std::ifstream in(path);
      if (!in) return make_error(ErrorCode::kNotFound, fmt::format("cannot read the batch script {}", path));
      std::stringstream text;
      text << in.rdbuf();
      return text.str();
    };
    SubmitRequest parsed = LOOM_TRY(parse_submit(words, cwd, env, read_script));
    if (parsed.array_size != 0) return make_error(ErrorCode::kUnimplemented, "--array is not supported yet");
    const std::string address = controller_address(parsed.controller, context.config);
    v1::SubmitRequest request;
    v1::Caller caller = LOOM_TRY(me());
    *request.mutable_caller() = std::move(caller);
    *request.mutable_spec() = std::move(parsed.spec);
    v1::SubmitReply reply;
    grpc::ClientContext call;
    if (grpc::Status s = stub(address)->Submit(&call, request, &reply); !s.ok()) return std::unexpected(from_grpc(s, address));
    std::cout << reply.job() << '\n';
    return {};
}

std::vector<Command> add_job_commands(CLI::App& app) {
  auto controller = std::make_shared<std::string>();
  std::vector<Command> commands;

  // Listed for --help only: main() hands `loom submit`'s words to run_submit untouched.
  app.add_subcommand("submit", "Submit a job: loom submit [OPTIONS] -- CMD ARGS, or loom submit [OPTIONS] SCRIPT "
                               "(Slurm's sbatch options; #LOOM lines in a script)");

  auto* queue = app.add_subcommand("queue", "List your jobs (every job for an admin)");
  auto queue_json = std::make_shared<bool>(false);
  queue->add_flag("--json", *queue_json, "Print one JSON object");
  queue->add_option("--controller", *controller, "The controller's HOST:PORT");
  commands.push_back({queue, [queue_json, controller](const Context& context) -> Status {
    const std::string address = controller_address(*controller, context.config);
    v1::ListRequest request;
    v1::Caller caller = LOOM_TRY(me());
    *request.mutable_caller() = std::move(caller);
    v1::ListReply reply;
    grpc::ClientContext call;
    if (grpc::Status s = stub(address)->List(&call, request, &reply); !s.ok()) return std::unexpected(from_grpc(s, address));
    if (*queue_json) {
      nlohmann::json jobs = nlohmann::json::array();
      for (const v1::JobInfo& j : reply.jobs()) {
        nlohmann::json full = job_json(j);
        jobs.push_back({{"id", full["id"]}, {"name", full["name"]}, {"user", full["user"]}, {"state", full["state"]},
                        {"nodes", full["nodes"]}, {"tasks", full["tasks"]}, {"submit_time", full["submit_time"]},
                        {"start_time", full["start_time"]}});
      }
      std::cout << nlohmann::json{{"jobs", jobs}}.dump(2) << '\n';
      return {};
    }
    std::cout << fmt::format("{:>8} {:<16} {:<12} {:<11} {:>5} {:>5} {:<19} {}\n", "ID", "NAME", "USER", "STATE", "NODES",
                             "TASKS", "SUBMIT", "START");
    for (const v1::JobInfo& j : reply.jobs()) {
      std::cout << fmt::format("{:>8} {:<16} {:<12} {:<11} {:>5} {:>5} {:<19} {}\n", j.id(), j.name().substr(0, 16), j.user(),
                               v1::JobState_Name(j.state()), j.nodes(), j.tasks(), when(j.submit_time()),
                               when(j.has_start_time() ? j.start_time() : 0));
    }
    return {};
  }});

  auto* show = app.add_subcommand("show", "Show a job: state, reason, exit status, placement, times");
  auto show_id = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  show->add_option("job", *show_id, "Job id")->required();
  show->add_flag("--json", *show_json, "Print one JSON object");
  show->add_option("--controller", *controller, "The controller's HOST:PORT");
  commands.push_back({show, [show_id, show_json, controller](const Context& context) -> Status {
    const std::string address = controller_address(*controller, context.config);
    const v1::JobRequest request = LOOM_TRY(job_request(*show_id));
    v1::JobInfo reply;
    grpc::ClientContext call;
    if (grpc::Status s = stub(address)->Show(&call, request, &reply); !s.ok()) return std::unexpected(from_grpc(s, address));
    const nlohmann::json j = job_json(reply);
    if (*show_json) {
      std::cout << j.dump(2) << '\n';
      return {};
    }
    std::cout << fmt::format("job {} ({}) of {}: {}{}\n", reply.id(), reply.name(), reply.user(), v1::JobState_Name(reply.state()),
                             reply.reason().empty() ? "" : " (" + reply.reason() + ")");
    if (reply.has_exit_code()) {
      std::cout << fmt::format("exit code {}{}\n", reply.exit_code(), reply.has_signal() ? fmt::format(" (signal {})", reply.signal()) : "");
    }
    std::cout << fmt::format("submitted {}, started {}, ended {}\n", when(reply.submit_time()),
                             when(reply.has_start_time() ? reply.start_time() : 0), when(reply.has_end_time() ? reply.end_time() : 0));
    for (const nlohmann::json& rank : j["placement"]) {
      std::cout << fmt::format("  rank {} on {}: cores {} memory on NUMA {}\n", rank["rank"].get<unsigned>(),
                               rank["node"].get<std::string>(), rank["cores"].dump(), rank["numa"].get<unsigned>());
    }
    return {};
  }});

  auto* cancel = app.add_subcommand("cancel", "Cancel a job");
  auto cancel_id = std::make_shared<std::string>();
  cancel->add_option("job", *cancel_id, "Job id")->required();
  cancel->add_option("--controller", *controller, "The controller's HOST:PORT");
  commands.push_back({cancel, [cancel_id, controller](const Context& context) -> Status {
    const std::string address = controller_address(*controller, context.config);
    const v1::JobRequest request = LOOM_TRY(job_request(*cancel_id));
    v1::CancelReply reply;
    grpc::ClientContext call;
    if (grpc::Status s = stub(address)->Cancel(&call, request, &reply); !s.ok()) return std::unexpected(from_grpc(s, address));
    return {};
  }});
  return commands;
}

}  // namespace loom::cli
