// loomd: the node agent. Registers its topology with the controller over one stream, runs
// each rank it is sent as a Task (own cgroup, bound as placed, as the user) and reports
// when a job's processes on this node have all ended.
//
// Threads: the stream reader (this one), one waiter per job, and one that delivers the
// SIGKILLs due after kill grace periods; writes to the stream take a lock.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <map>
#include <mutex>
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

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

class Agent {
 public:
  Agent(std::string name, std::string cgroup, hwtopo::Binder binder, bool allow_root)
      : name_(std::move(name)), cgroup_(std::move(cgroup)), binder_(std::move(binder)), allow_root_(allow_root) {}

  int run(const std::string& controller, const std::string& topology_json) {
    const std::string& name = name_;
    auto channel = grpc::CreateChannel(controller, grpc::InsecureChannelCredentials());
    auto stub = v1::AgentLink::NewStub(channel);
    stream_ = stub->Connect(&context_);
    auto credential = munge_credential();
    if (!credential) {
      std::fprintf(stderr, "loomd: %s\n", credential.error().to_string().c_str());
      return 1;
    }
    v1::FromAgent hello;
    hello.mutable_hello()->set_name(name);
    hello.mutable_hello()->set_topology_json(topology_json);
    hello.mutable_hello()->set_credential(*credential);
    if (!write(hello)) {
      std::fprintf(stderr, "loomd: cannot reach the controller at %s\n", controller.c_str());
      return 1;
    }
    for (v1::ToAgent command; stream_->Read(&command);) {
      if (command.has_registered()) spdlog::info("registered with {} as {}", controller, name);
      if (command.has_launch()) launch(command.launch());
      if (command.has_kill()) kill(JobId(command.kill().job()), std::chrono::seconds(command.kill().grace_s()));
    }
    {
      std::lock_guard lock(write_mutex_);  // no report may be written once Finish is called
      closed_ = true;
    }
    const grpc::Status status = stream_->Finish();
    if (stopped_.load()) return 0;
    if (!status.ok()) std::fprintf(stderr, "loomd: the controller refused or dropped this agent: %s\n", status.error_message().c_str());
    std::lock_guard lock(jobs_mutex_);
    for (auto& [id, job] : jobs_) {
      for (agent::Task& task : job->tasks) (void)task.kill();
    }
    return status.ok() ? 0 : 1;
  }

  // An orderly stop (SIGTERM): the node's jobs are killed and their ends reported (bounded
  // wait), then the stream is closed.
  void stop() {
    {
      std::unique_lock lock(jobs_mutex_);
      for (auto& [id, job] : jobs_) {
        for (agent::Task& task : job->tasks) (void)task.kill();
      }
      jobs_changed_.wait_for(lock, std::chrono::seconds(10), [this] { return jobs_.empty(); });
    }
    stopped_.store(true);
    context_.TryCancel();
  }

  ~Agent() {
    {
      std::lock_guard lock(jobs_mutex_);
      stopping_ = true;
    }
    kills_due_.notify_all();
    killer_.join();
    for (Waiter& w : waiters_) w.thread.join();
  }

 private:
  struct Job {
    std::vector<agent::Task> tasks;
  };

  bool write(const v1::FromAgent& message) {
    std::lock_guard lock(write_mutex_);
    return !closed_ && stream_->Write(message);
  }

  void report_ended(JobId id, const agent::ExitStatus& status, const std::string& error) {
    v1::FromAgent message;
    v1::JobEnded* ended = message.mutable_ended();
    ended->set_job(id.value());
    ended->set_exit_code(status.exit_code);
    if (status.signal) ended->set_signal(*status.signal);
    ended->set_out_of_memory(status.out_of_memory);
    ended->set_error(error);
    write(message);
  }

  void launch(const v1::Launch& launch) {
    const JobId id(launch.job());
    const v1::JobSpec& spec = launch.spec();
    auto job = std::make_shared<Job>();
    std::string error;
    v1::FromAgent started;
    for (const v1::Rank& rank : launch.ranks()) {
      agent::TaskSpec t;
      t.cgroup_name = fmt::format("{}/job_{}_rank_{}", cgroup_, id.value(), rank.rank());
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
      t.allow_root = allow_root_;
      t.memory_limit = rank.memory_bytes();
      std::vector<unsigned> cores(rank.cores().begin(), rank.cores().end());
      auto binding = binder_.resolve(cores, rank.numa());
      if (!binding) {
        error = binding.error().to_string();
        break;
      }
      t.binding = std::move(*binding);
      auto task = agent::Task::start(t, binder_);
      if (!task) {
        error = task.error().to_string();
        break;
      }
      job->tasks.push_back(std::move(*task));
      v1::RankBinding* bound = started.mutable_started()->add_ranks();
      bound->set_rank(rank.rank());
      for (unsigned pu : t.binding->applied_pus) bound->add_cpus(pu);
      if (t.binding->applied_numa) bound->add_numa(*t.binding->applied_numa);
    }
    if (!error.empty()) {
      for (agent::Task& task : job->tasks) (void)task.kill();
      for (agent::Task& task : job->tasks) (void)task.wait();
      report_ended(id, agent::ExitStatus{.exit_code = 127, .signal = std::nullopt, .out_of_memory = false}, error);
      return;
    }
    started.mutable_started()->set_job(id.value());
    write(started);
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_[id] = job;
    }
    // Join the waiters of jobs that have ended, so that an agent running for months does
    // not accumulate finished threads.
    std::erase_if(waiters_, [](Waiter& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    waiters_.push_back({std::thread([this, id, job, done] {
      agent::ExitStatus first_failure;  // the first failing rank's, as the job's
      for (agent::Task& task : job->tasks) {
        auto status = task.wait();
        if (status && status->exit_code != 0 && first_failure.exit_code == 0) first_failure = *status;
        if (status && status->out_of_memory) first_failure.out_of_memory = true;
      }
      report_ended(id, first_failure, "");  // before the job leaves jobs_: stop() waits for both
      {
        std::lock_guard lock(jobs_mutex_);
        jobs_.erase(id);
      }
      jobs_changed_.notify_all();
      done->store(true);
    }), done});
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
    kill_at_.emplace(std::chrono::steady_clock::now() + grace, id);
    kills_due_.notify_all();
  }

  // The killer thread: SIGKILLs each job whose grace period has run out, if it still runs.
  void deliver_kills() {
    std::unique_lock lock(jobs_mutex_);
    while (!stopping_) {
      if (kill_at_.empty()) {
        kills_due_.wait(lock);
        continue;
      }
      const auto [due, id] = *kill_at_.begin();
      if (kills_due_.wait_until(lock, due) != std::cv_status::timeout) continue;  // re-check: new or earlier kills
      kill_at_.erase(kill_at_.begin());
      if (auto it = jobs_.find(id); it != jobs_.end()) {
        spdlog::info("job {}: still running when its kill grace ran out; SIGKILL", id.value());
        for (agent::Task& task : it->second->tasks) (void)task.kill();
      }
    }
  }

  std::string name_;    // the node's
  std::string cgroup_;  // this agent's level under loom/: its tasks' cgroups live under it
  hwtopo::Binder binder_;
  bool allow_root_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::FromAgent, v1::ToAgent>> stream_;
  std::atomic<bool> stopped_{false};
  std::mutex write_mutex_;
  bool closed_ = false;  // the stream is finished: reports go nowhere (guarded by write_mutex_)
  std::mutex jobs_mutex_;  // guards jobs_, kill_at_ and stopping_
  std::map<JobId, std::shared_ptr<Job>> jobs_;
  std::multimap<std::chrono::steady_clock::time_point, JobId> kill_at_;  // SIGKILLs due
  bool stopping_ = false;
  std::condition_variable kills_due_;
  std::condition_variable jobs_changed_;  // a job left jobs_
  std::thread killer_{[this] { deliver_kills(); }};  // after what it uses, so it starts once that is built
  struct Waiter {
    std::thread thread;  // waits for one job's tasks; joined once done is set
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Waiter> waiters_;  // used by the stream reader thread only
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loomd: the Loom node agent"};
  std::string controller, name, cgroup, xml, synthetic, config_file;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  name = host;
  app.add_option("--controller", controller, "The controller's HOST:PORT")->required();
  app.add_option("--name", name, "This node's name")->capture_default_str();
  app.add_option("--cgroup", cgroup, "This agent's cgroup under loom/, where its jobs' cgroups go (default: the node's name)");
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

  // SIGTERM and SIGINT stop the agent in order (Agent::stop); blocked before any thread
  // starts, and waited for on a thread of their own. SIGUSR1 only ends that thread.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Agent agent(name, cgroup.empty() ? name : cgroup, std::move(*binder), config->agent.allow_root_jobs);
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal == SIGUSR1) return;
    spdlog::info("signal {}: killing this node's jobs and stopping", signal);
    agent.stop();
  });
  const int status = agent.run(controller, topology_json);
  ::kill(::getpid(), SIGUSR1);  // ends the waiter if no signal came; pending and harmless if one did
  signal_waiter.join();
  agent::Cgroup::remove_level(cgroup.empty() ? name : cgroup);
  return status;
}
