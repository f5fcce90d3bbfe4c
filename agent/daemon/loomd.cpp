// loomd: the node agent. Registers its topology with the controller over one stream, runs
// each rank it is sent as a Task (own cgroup, bound as placed, as the user, watched by a
// keeper) and reports when a job's processes on this node have all ended.
//
// Jobs outlive the agent: each job is recorded in the state directory, so that an agent
// that restarts (crashed, upgraded, or stopped with SIGTERM) adopts its tasks again, and a
// job's end is kept until the controller acknowledges it (Forget). When the stream breaks
// the agent reconnects and tells the controller what it still runs and what ended meanwhile.
//
// Threads: the stream reader (run), one waiter per job, one that delivers the SIGKILLs due
// after kill grace periods, one that sends heartbeats, and one that waits for signals.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "loom/agent/task.hpp"
#include "loom/common/config.hpp"
#include "loom/common/ids.hpp"
#include "loom/common/munge.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/proto/loom.grpc.pb.h"

namespace {

using namespace loom;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

struct Options {
  std::string controller;
  std::string name;
  std::string cgroup;  // this agent's level under loom/
  fs::path state_dir;
  bool allow_root = false;
  std::chrono::seconds heartbeat{1};
  fs::path keeper;  // loom-keeper, beside loomd
};

class Agent {
 public:
  Agent(Options options, hwtopo::Binder binder) : o_(std::move(options)), binder_(std::move(binder)) {}

  // Adopts what the state directory says an agent before this one left running, then
  // serves the controller until stop(), reconnecting whenever the stream breaks. Returns
  // the exit status: 1 when the controller refuses this agent.
  int run(const std::string& topology_json) {
    recover();
    std::thread beat([this] { send_heartbeats(); });
    int status = 0;
    for (auto retry = std::chrono::milliseconds(100); !stopped_.load();) {
      const grpc::Status ended = serve(topology_json);
      if (stopped_.load()) break;
      if (ended.error_code() == grpc::StatusCode::PERMISSION_DENIED || ended.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          ended.error_code() == grpc::StatusCode::FAILED_PRECONDITION || ended.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        std::fprintf(stderr, "loomd: the controller refused this agent: %s\n", ended.error_message().c_str());
        status = 1;
        break;
      }
      spdlog::warn("lost the controller at {} ({}); reconnecting, this node's jobs keep running", o_.controller,
                   ended.error_message());
      std::unique_lock lock(jobs_mutex_);
      wake_.wait_for(lock, retry, [this] { return stopped_.load(); });
      retry = std::min<std::chrono::milliseconds>(retry * 2, std::chrono::seconds(2));
    }
    stopped_.store(true);
    wake_.notify_all();
    beat.join();
    return status;
  }

  // An orderly stop (SIGTERM, SIGINT): the agent leaves, its jobs keep running under their
  // keepers for the next agent to adopt.
  void stop() {
    stopped_.store(true);
    wake_.notify_all();
    std::lock_guard lock(write_mutex_);
    if (context_) context_->TryCancel();
  }

  // After run(): the one thread that is joined rather than left to the process's exit.
  void join_killer() {
    wake_.notify_all();
    killer_.join();
  }

 private:
  struct Job {
    JobId id;
    std::vector<agent::Task> tasks;
  };

  fs::path record_path(JobId id) const { return o_.state_dir / fmt::format("job_{}.json", id.value()); }

  // Written whole, then renamed: a crash leaves the old record or the new one.
  void save(JobId id, const nlohmann::json& record) const {
    const fs::path path = record_path(id), temp = path.string() + ".tmp";
    {
      std::ofstream out(temp);
      out << record.dump();
      out.flush();
      if (!out) spdlog::error("cannot write {}: the job would be lost by a restart", temp.string());
    }
    fs::rename(temp, path);
  }

  static nlohmann::json ended_json(const v1::JobEnded& e) {
    return {{"exit_code", e.exit_code()},
            {"signal", e.has_signal() ? nlohmann::json(e.signal()) : nlohmann::json(nullptr)},
            {"out_of_memory", e.out_of_memory()},
            {"error", e.error()}};
  }

  // The state directory's records: jobs still running are adopted and waited for again;
  // ends not yet acknowledged are reported at the next registration.
  void recover() {
    std::error_code ec;
    fs::create_directories(o_.state_dir, ec);
    ::chmod(o_.state_dir.c_str(), 0700);
    for (const auto& entry : fs::directory_iterator(o_.state_dir, ec)) {
      const std::string file = entry.path().filename().string();
      if (!file.starts_with("job_") || !file.ends_with(".json")) continue;
      std::ifstream in(entry.path());
      const nlohmann::json record = nlohmann::json::parse(in, nullptr, false);
      if (record.is_discarded()) {
        spdlog::error("{} does not parse; set aside", entry.path().string());
        fs::rename(entry.path(), entry.path().string() + ".bad", ec);
        continue;
      }
      const JobId id(record["job"].get<std::uint64_t>());
      if (record.contains("launching")) {
        // The agent before this one stopped while starting the job: whatever of it started
        // is killed, and the job reported failed here.
        for (const nlohmann::json& rank : record["launching"]) {
          if (auto cgroup = agent::Cgroup::open(fmt::format("{}/job_{}_rank_{}", o_.cgroup, id.value(), rank.get<unsigned>()))) {
            (void)cgroup->kill_all();
          }
        }
        v1::JobEnded e;
        e.set_job(id.value());
        e.set_exit_code(127);
        e.set_error("the agent stopped while starting the job");
        finish(id, e);
        continue;
      }
      if (!record["ended"].is_null()) {
        v1::JobEnded e;
        e.set_job(id.value());
        e.set_exit_code(record["ended"]["exit_code"]);
        if (!record["ended"]["signal"].is_null()) e.set_signal(record["ended"]["signal"]);
        e.set_out_of_memory(record["ended"]["out_of_memory"]);
        e.set_error(record["ended"]["error"]);
        std::lock_guard lock(jobs_mutex_);
        ended_[id] = e;
        continue;
      }
      auto job = std::make_shared<Job>();
      job->id = id;
      std::string lost;
      for (const nlohmann::json& r : record["ranks"]) {
        agent::TaskRecord tr{r["cgroup"], r["keeper"], r["keeper_start"], r["status"].get<std::string>()};
        auto task = agent::Task::adopt(tr);
        if (!task) {
          lost = task.error().to_string();
          continue;
        }
        job->tasks.push_back(std::move(*task));
      }
      if (!lost.empty()) {
        abandon(*job, "lost by an agent restart: " + lost);
        continue;
      }
      spdlog::info("job {}: {} rank(s) still running, adopted", id.value(), job->tasks.size());
      watch(job);
    }
  }

  // One registration and the stream after it, until it breaks or stop().
  grpc::Status serve(const std::string& topology_json) {
    auto channel = grpc::CreateChannel(o_.controller, grpc::InsecureChannelCredentials());
    auto stub = v1::AgentLink::NewStub(channel);
    auto context = std::make_unique<grpc::ClientContext>();
    auto stream = stub->Connect(context.get());
    auto credential = munge_credential();
    if (!credential) return {grpc::StatusCode::UNAUTHENTICATED, credential.error().to_string()};
    v1::FromAgent hello;
    hello.mutable_hello()->set_name(o_.name);
    hello.mutable_hello()->set_topology_json(topology_json);
    hello.mutable_hello()->set_credential(*credential);
    {
      std::lock_guard lock(jobs_mutex_);
      for (const auto& [id, job] : jobs_) hello.mutable_hello()->add_running(id.value());
      for (const auto& [id, e] : ended_) *hello.mutable_hello()->add_ended() = e;
    }
    {
      std::lock_guard lock(write_mutex_);
      if (stopped_.load()) return grpc::Status::OK;
      context_ = context.get();
      stream_ = stream.get();
    }
    if (!write(hello)) {
      close_stream();
      return stream->Finish();
    }
    for (v1::ToAgent command; stream->Read(&command);) {
      if (command.has_registered()) spdlog::info("registered with {} as {}", o_.controller, o_.name);
      if (command.has_launch()) launch(command.launch());
      if (command.has_kill()) kill(JobId(command.kill().job()), std::chrono::seconds(command.kill().grace_s()));
      if (command.has_forget()) forget(JobId(command.forget().job()));
    }
    close_stream();
    return stream->Finish();
  }

  void close_stream() {
    std::lock_guard lock(write_mutex_);  // no message may be written once Finish is called
    stream_ = nullptr;
    context_ = nullptr;
  }

  bool write(const v1::FromAgent& message) {
    std::lock_guard lock(write_mutex_);
    return stream_ != nullptr && stream_->Write(message);
  }

  void send_heartbeats() {
    v1::FromAgent beat;
    beat.mutable_heartbeat();
    std::unique_lock lock(jobs_mutex_);
    while (!stopped_.load()) {
      wake_.wait_for(lock, o_.heartbeat, [this] { return stopped_.load(); });
      lock.unlock();
      write(beat);
      lock.lock();
    }
  }

  void launch(const v1::Launch& launch) {
    const JobId id(launch.job());
    const v1::JobSpec& spec = launch.spec();
    auto job = std::make_shared<Job>();
    job->id = id;
    std::string error;
    v1::FromAgent started;
    nlohmann::json ranks = nlohmann::json::array();
    // Recorded before anything starts: an agent that dies while launching leaves a record
    // that says so (and which cgroups to clean), never tasks that no record knows.
    nlohmann::json launching = nlohmann::json::array();
    for (const v1::Rank& rank : launch.ranks()) launching.push_back(rank.rank());
    save(id, {{"job", id.value()}, {"launching", launching}, {"ranks", ranks}, {"ended", nullptr}});
    for (const v1::Rank& rank : launch.ranks()) {
      agent::TaskSpec t;
      t.cgroup_name = fmt::format("{}/job_{}_rank_{}", o_.cgroup, id.value(), rank.rank());
      if (spec.script().empty()) {
        t.argv.assign(spec.argv().begin(), spec.argv().end());
      } else {
        t.argv = {"/bin/sh", "-c", spec.script()};
      }
      t.environment.insert(spec.environment().begin(), spec.environment().end());
      t.environment["LOOM_JOB_ID"] = std::to_string(id.value());
      t.environment["LOOM_RANK"] = std::to_string(rank.rank());
      if (launch.array_job() != 0) {
        t.environment["LOOM_ARRAY_JOB_ID"] = std::to_string(launch.array_job());
        t.environment["LOOM_ARRAY_INDEX"] = std::to_string(launch.array_index());
      }
      t.chdir = spec.chdir();
      t.stdout_path = replace_all(spec.stdout_path(), "%j", std::to_string(id.value()));
      t.stderr_path = replace_all(spec.stderr_path(), "%j", std::to_string(id.value()));
      t.uid = launch.uid();
      t.allow_root = o_.allow_root;
      t.memory_limit = rank.memory_bytes();
      t.status_path = o_.state_dir / fmt::format("job_{}_rank_{}.status", id.value(), rank.rank());
      std::vector<unsigned> cores(rank.cores().begin(), rank.cores().end());
      auto binding = binder_.resolve(cores, rank.numa());
      if (!binding) {
        error = binding.error().to_string();
        break;
      }
      t.binding = std::move(*binding);
      t.keeper = o_.keeper;
      auto task = agent::Task::start(t);
      if (!task) {
        error = task.error().to_string();
        break;
      }
      const agent::TaskRecord& r = task->record();
      ranks.push_back({{"rank", rank.rank()}, {"cgroup", r.cgroup_name}, {"keeper", r.keeper},
                       {"keeper_start", r.keeper_start}, {"status", r.status_path.string()}});
      job->tasks.push_back(std::move(*task));
      v1::RankBinding* bound = started.mutable_started()->add_ranks();
      bound->set_rank(rank.rank());
      for (unsigned pu : t.binding->applied_pus) bound->add_cpus(pu);
      if (t.binding->applied_numa) bound->add_numa(*t.binding->applied_numa);
    }
    if (!error.empty()) {
      abandon(*job, error);
      return;
    }
    save(id, {{"job", id.value()}, {"ranks", ranks}, {"ended", nullptr}});
    started.mutable_started()->set_job(id.value());
    write(started);
    watch(job);
  }

  // A job that cannot run here: what started of it is killed, and it ends failed with why.
  void abandon(Job& job, const std::string& error) {
    for (agent::Task& task : job.tasks) (void)task.kill();
    for (agent::Task& task : job.tasks) (void)task.wait();
    v1::JobEnded e;
    e.set_job(job.id.value());
    e.set_exit_code(127);
    e.set_error(error);
    finish(job.id, e);
  }

  // A waiter for the job's tasks; the first failing rank's status is the job's.
  void watch(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_[job->id] = job;
    }
    // Join the waiters of jobs that have ended, so that an agent running for months does
    // not accumulate finished threads.
    std::erase_if(waiters_, [](Waiter& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    waiters_.push_back({std::thread([this, job, done] {
      v1::JobEnded e;
      e.set_job(job->id.value());
      for (agent::Task& task : job->tasks) {
        auto status = task.wait();
        if (!status) {
          if (e.error().empty()) e.set_error(status.error().to_string());
          if (e.exit_code() == 0) e.set_exit_code(127);
          continue;
        }
        if (status->exit_code != 0 && e.exit_code() == 0) {
          e.set_exit_code(status->exit_code);
          if (status->signal) e.set_signal(*status->signal);
        }
        if (status->out_of_memory) e.set_out_of_memory(true);
      }
      finish(job->id, e);
      done->store(true);
    }), done});
  }

  // The job's processes here are all gone: recorded, then reported (again at every
  // registration until the controller says Forget).
  void finish(JobId id, const v1::JobEnded& e) {
    nlohmann::json record;
    {
      std::ifstream in(record_path(id));
      record = nlohmann::json::parse(in, nullptr, false);
    }
    if (record.is_discarded()) record = {{"job", id.value()}, {"ranks", nlohmann::json::array()}};
    record.erase("launching");
    record["ended"] = ended_json(e);
    save(id, record);
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_.erase(id);
      ended_[id] = e;
    }
    v1::FromAgent message;
    *message.mutable_ended() = e;
    write(message);
  }

  void forget(JobId id) {
    std::lock_guard lock(jobs_mutex_);
    ended_.erase(id);
    std::error_code ignored;
    fs::remove(record_path(id), ignored);
  }

  // SIGTERM now and SIGKILL after the grace period; at once without one.
  void kill(JobId id, std::chrono::seconds grace) {
    std::lock_guard lock(jobs_mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (grace.count() == 0) {
      for (agent::Task& task : it->second->tasks) (void)task.kill();
      return;
    }
    for (agent::Task& task : it->second->tasks) task.terminate();
    kill_at_.emplace(Clock::now() + grace, id);
    wake_.notify_all();
  }

  // The killer thread: SIGKILLs each job whose grace period has run out, if it still runs.
  void deliver_kills() {
    std::unique_lock lock(jobs_mutex_);
    while (!stopped_.load()) {
      if (kill_at_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const auto [due, id] = *kill_at_.begin();
      if (wake_.wait_until(lock, due) != std::cv_status::timeout) continue;  // re-check: new or earlier kills
      kill_at_.erase(kill_at_.begin());
      if (auto it = jobs_.find(id); it != jobs_.end()) {
        spdlog::info("job {}: still running when its kill grace ran out; SIGKILL", id.value());
        for (agent::Task& task : it->second->tasks) (void)task.kill();
      }
    }
  }

  Options o_;
  hwtopo::Binder binder_;
  std::atomic<bool> stopped_{false};
  std::mutex write_mutex_;  // guards the stream pointers and writes to the stream
  grpc::ClientContext* context_ = nullptr;
  grpc::ClientReaderWriter<v1::FromAgent, v1::ToAgent>* stream_ = nullptr;  // null while disconnected
  std::mutex jobs_mutex_;  // guards jobs_, ended_ and kill_at_
  std::map<JobId, std::shared_ptr<Job>> jobs_;  // running here
  std::map<JobId, v1::JobEnded> ended_;         // ended here, not yet acknowledged
  std::multimap<Clock::time_point, JobId> kill_at_;  // SIGKILLs due
  std::condition_variable_any wake_;  // stop, a kill due, a heartbeat due, a reconnection
  std::thread killer_{[this] { deliver_kills(); }};  // after what it uses, so it starts once that is built
  struct Waiter {
    std::thread thread;  // waits for one job's tasks; joined once done is set
    std::shared_ptr<std::atomic<bool>> done;
  };
  // Never destroyed: waiter threads may be blocked on tasks that outlive the agent by
  // design, and are left to the process's exit (see main).
  std::vector<Waiter> waiters_;  // used by the stream reader thread only
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loomd: the Loom node agent"};
  std::string controller, name, cgroup, xml, synthetic, config_file, state_dir;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  name = host;
  app.add_option("--controller", controller, "The controller's HOST:PORT")->required();
  app.add_option("--name", name, "This node's name")->capture_default_str();
  app.add_option("--cgroup", cgroup, "This agent's cgroup under loom/, where its jobs' cgroups go (default: the node's name)");
  app.add_option("--state-dir", state_dir, "Where this agent records its jobs (default: agent.state_dir)");
  auto* x = app.add_option("--xml", xml, "Simulate a node with this hwloc XML topology");
  app.add_option("--synthetic", synthetic, "Simulate a node with this hwloc synthetic topology")->excludes(x);
  app.add_option("--config", config_file, "Configuration file");
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    std::fprintf(stderr, "loomd: %s\n", e.to_string().c_str());
    return 1;
  };
  auto config = start_program("loomd", config_file.empty() ? std::nullopt : std::optional<std::filesystem::path>(config_file));
  if (!config) return fail(config.error());

  Result<hwtopo::Topology> topology = !xml.empty()         ? hwtopo::load_xml(xml)
                                      : !synthetic.empty() ? hwtopo::load_synthetic(synthetic)
                                                           : hwtopo::load_live();
  if (!topology) return fail(topology.error());
  const std::string topology_json = hwtopo::to_json(*topology).dump();
  Result<hwtopo::Binder> binder = xml.empty() && synthetic.empty() ? hwtopo::Binder::for_live_machine()
                                                                   : hwtopo::Binder::for_simulated(*topology);
  if (!binder) return fail(binder.error());

  // SIGTERM and SIGINT stop the agent (Agent::stop); blocked before any thread starts, and
  // waited for on a thread of their own. SIGUSR1 only ends that thread.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Options options{controller,
                  name,
                  cgroup.empty() ? name : cgroup,
                  state_dir.empty() ? std::filesystem::path(config->agent.state_dir) : std::filesystem::path(state_dir),
                  config->agent.allow_root_jobs,
                  config->controller.heartbeat_interval,
                  std::filesystem::read_symlink("/proc/self/exe").parent_path() / "loom-keeper"};
  if (::access(options.keeper.c_str(), X_OK) != 0) {
    return fail(Error(ErrorCode::kNotFound, fmt::format("cannot find {}, which starts every task", options.keeper.string())));
  }
  auto agent = std::make_unique<Agent>(options, std::move(*binder));  // never destroyed: see Agent::waiters_
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal == SIGUSR1) return;
    spdlog::info("signal {}: leaving; this node's jobs keep running for the next agent", signal);
    agent->stop();
  });
  const int status = agent->run(topology_json);
  ::kill(::getpid(), SIGUSR1);  // ends the waiter if no signal came; pending and harmless if one did
  signal_waiter.join();
  agent->join_killer();
  spdlog::default_logger()->flush();
  // Waiters blocked on running tasks end with the process, not before it: their jobs are
  // in the state directory for the next agent.
  std::_Exit(status);
}
