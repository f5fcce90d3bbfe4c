#include "loom/agent/job_record.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "json_file.hpp"
#include "loom/burstbuffer/staging_spec.hpp"

namespace loom::agent {

namespace fs = std::filesystem;

namespace {

std::string to_json_string(const google::protobuf::Message& message) {
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json);
  return json;
}

// Protobuf messages are kept as their JSON, in a string: the format older agents wrote.
template <typename Message>
Message from_json_string(const nlohmann::json& text, std::string_view field) {
  Message message;
  if (!google::protobuf::util::JsonStringToMessage(text.get<std::string>(), &message).ok())
    throw std::invalid_argument(fmt::format("{} does not parse", field));
  return message;
}

// A record written before the job's text fields were bytes (format 1) holds them as JSON
// strings, which protobuf's JSON now reads as base64: they are taken out and set as they are.
v1::Launch legacy_launch(const nlohmann::json& text) {
  nlohmann::json launch = nlohmann::json::parse(text.get<std::string>(), nullptr, false);
  if (!launch.is_object()) throw std::invalid_argument("launch does not parse");
  nlohmann::json spec = launch.value("spec", nlohmann::json::object());
  const auto take = [&](std::initializer_list<const char*> names) {
    nlohmann::json value;
    for (const char* name : names) {
      if (spec.contains(name)) value = std::exchange(spec[name], nullptr);
      spec.erase(name);
    }
    return value;
  };
  const nlohmann::json name = take({"name"}), argv = take({"argv"}), script = take({"script"}),
                       chdir = take({"chdir"}), out = take({"stdoutPath", "stdout_path"}),
                       err = take({"stderrPath", "stderr_path"}), env = take({"environment"});
  launch["spec"] = spec;
  auto message = from_json_string<v1::Launch>(launch.dump(), "launch");
  v1::JobSpec& s = *message.mutable_spec();
  if (name.is_string()) s.set_name(name.get<std::string>());
  if (argv.is_array()) {
    for (const nlohmann::json& word : argv) s.add_argv(word.get<std::string>());
  }
  if (script.is_string()) s.set_script(script.get<std::string>());
  if (chdir.is_string()) s.set_chdir(chdir.get<std::string>());
  if (out.is_string()) s.set_stdout_path(out.get<std::string>());
  if (err.is_string()) s.set_stderr_path(err.get<std::string>());
  if (env.is_object()) {
    for (const auto& [key, value] : env.items())
      (*s.mutable_environment())[key] = value.get<std::string>();
  }
  return message;
}

nlohmann::json ended_json(const v1::JobEnded& e) {
  return {{"exit_code", e.exit_code()},
          {"signal", e.has_signal() ? nlohmann::json(e.signal()) : nlohmann::json(nullptr)},
          {"out_of_memory", e.out_of_memory()},
          {"error", e.error()},
          {"reason", v1::Reason_Name(e.reason())},
          {"cpu_seconds", e.usage().cpu_seconds()},
          {"memory_peak_bytes", e.usage().has_memory_peak_bytes()
                                    ? nlohmann::json(e.usage().memory_peak_bytes())
                                    : nlohmann::json(nullptr)}};
}

v1::JobEnded ended_of(JobId id, const nlohmann::json& j) {
  v1::JobEnded e;
  e.set_job(id.value());
  e.set_exit_code(j.at("exit_code").get<int>());
  if (!j.at("signal").is_null()) e.set_signal(j.at("signal").get<int>());
  e.set_out_of_memory(j.at("out_of_memory").get<bool>());
  e.set_error(j.at("error").get<std::string>());
  v1::Reason reason = v1::REASON_NONE;
  if (j.contains("reason")) {
    if (!v1::Reason_Parse(j["reason"].get<std::string>(), &reason))
      throw std::invalid_argument("reason is not a reason");
  } else if (!e.error().empty()) {
    // A record from before reasons had codes: its error said which ("StageInFailed: ...").
    for (auto [prefix, code] : {std::pair{"StageInFailed: ", v1::REASON_STAGE_IN_FAILED},
                                std::pair{"StageOutFailed: ", v1::REASON_STAGE_OUT_FAILED}}) {
      if (e.error().starts_with(prefix)) {
        reason = code;
        e.set_error(e.error().substr(std::string_view(prefix).size()));
      }
    }
    if (reason == v1::REASON_NONE) reason = v1::REASON_LAUNCH_FAILED;
  }
  e.set_reason(reason);
  e.mutable_usage()->set_cpu_seconds(j.value("cpu_seconds", 0.0));
  if (j.contains("memory_peak_bytes") && !j["memory_peak_bytes"].is_null())
    e.mutable_usage()->set_memory_peak_bytes(j["memory_peak_bytes"].get<std::uint64_t>());
  return e;
}

nlohmann::json task_json(const TaskRecord& t) {
  return {{"cgroup", t.cgroup_name},
          {"keeper", t.keeper},
          {"keeper_start", t.keeper_start},
          {"status", t.status_path.string()}};
}

TaskRecord task_of(const nlohmann::json& t) {
  return {t.at("cgroup").get<std::string>(), t.at("keeper").get<pid_t>(),
          t.at("keeper_start").get<std::uint64_t>(), t.at("status").get<std::string>()};
}

nlohmann::json to_json(const JobRecord& r) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& [rank, t] : r.ranks) {
    nlohmann::json task = task_json(t);
    task["rank"] = rank;
    ranks.push_back(std::move(task));
  }
  nlohmann::json j = {{"job", r.id.value()},
                      {"format", 2},
                      {"launch", to_json_string(r.launch)},
                      {"started", to_json_string(r.started)},
                      {"ranks", std::move(ranks)},
                      {"ended", r.ended ? ended_json(*r.ended) : nlohmann::json(nullptr)}};
  if (r.launching) j["launching"] = *r.launching;
  if (r.daemon) j["daemon"] = true;
  if (r.pmix_server) j["pmix_server"] = task_json(*r.pmix_server);
  if (r.staging_out) j["staging_out"] = to_json_string(*r.staging_out);
  return j;
}

// Throws (nlohmann's exceptions, std::invalid_argument) on what a record cannot be.
JobRecord from_json(const nlohmann::json& j) {
  JobRecord r;
  r.id = JobId(j.at("job").get<std::uint64_t>());
  if (j.contains("launch")) {
    r.launch = j.value("format", 1) >= 2 ? from_json_string<v1::Launch>(j["launch"], "launch")
                                         : legacy_launch(j["launch"]);
    // A record a Loom 0.1 agent wrote stages by text.
    if (Status lifted = burstbuffer::lift_legacy_staging(*r.launch.mutable_spec()); !lifted)
      throw std::invalid_argument(lifted.error().to_string());
  }
  if (j.contains("started")) r.started = from_json_string<v1::JobStarted>(j["started"], "started");
  if (j.contains("launching")) r.launching = j["launching"].get<std::vector<std::uint32_t>>();
  if (j.contains("staging_out"))
    r.staging_out = from_json_string<v1::JobEnded>(j["staging_out"], "staging_out");
  for (const nlohmann::json& t : j.value("ranks", nlohmann::json::array()))
    r.ranks.emplace_back(t.value("rank", 0u), task_of(t));
  r.daemon = j.value("daemon", false);
  if (j.contains("pmix_server")) r.pmix_server = task_of(j["pmix_server"]);
  if (j.contains("ended") && !j["ended"].is_null()) r.ended = ended_of(r.id, j["ended"]);
  return r;
}

Result<JobRecord> read(const fs::path& path) {
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded())
    return make_error(ErrorCode::kDataLoss, "does not parse as JSON (cut short?)");
  try {
    return from_json(j);
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kDataLoss, fmt::format("not a job's record: {}", e.what()));
  }
}

}  // namespace

Result<JobRecords> JobRecords::open(fs::path dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("cannot make {}: {}", dir.string(), ec.message()));
  }
  ::chmod(dir.c_str(), 0700);  // jobs' commands and users are in the records
  return JobRecords(std::move(dir));
}

fs::path JobRecords::path(JobId id) const { return dir_ / fmt::format("job_{}.json", id.value()); }

Status JobRecords::save(const JobRecord& record) const {
  return with_context(
      write_json_file(path(record.id), to_json(record)),
      fmt::format("job {}'s record (a restart would lose the job)", record.id.value()));
}

std::optional<JobRecord> JobRecords::load(JobId id) const {
  if (!fs::exists(path(id))) return std::nullopt;
  auto record = read(path(id));
  if (!record) return std::nullopt;
  return std::move(*record);
}

void JobRecords::remove(JobId id) const {
  std::error_code ignored;
  fs::remove(path(id), ignored);
}

std::vector<JobRecord> JobRecords::load_all() const {
  std::vector<JobRecord> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string file = entry.path().filename().string();
    if (!file.starts_with("job_") || !file.ends_with(".json")) continue;
    auto record = read(entry.path());
    if (!record) {
      spdlog::error("{} {}; set aside as {}.bad", entry.path().string(), record.error().message(),
                    file);
      fs::rename(entry.path(), entry.path().string() + ".bad", ec);
      continue;
    }
    out.push_back(std::move(*record));
  }
  return out;
}

}  // namespace loom::agent
