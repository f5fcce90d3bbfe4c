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
#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <bit>
#include <charconv>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "job_storage.hpp"
#include "loom/agent/job_record.hpp"
#include "loom/agent/task.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/config.hpp"
#include "loom/common/ids.hpp"
#include "loom/common/munge.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/launch/mpi.hpp"
#include "loom/proto/loom.grpc.pb.h"

namespace {

using namespace loom;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

struct Options {
  std::string controller;
  std::string name;
  std::string cgroup;  // this agent's level under loom/
  fs::path state_dir;
  fs::path shm_dir;  // MPI jobs' shared-memory directories
  bool allow_root = false;
  std::uint64_t pids_max = 0;  // agent.pids_max
  std::uint64_t swap = 0;      // agent.swap
  std::chrono::seconds heartbeat{1};
  fs::path keeper;  // loom-keeper, beside loomd
  std::vector<Config::NvmeDevice> nvme;
  std::string data_address;  // a storage agent's Storage service; empty on a compute node
  burstbuffer::DataPlaneOptions data_plane;
};

class Agent {
 public:
  Agent(Options options, hwtopo::Binder binder, agent::CgroupTree cgroups,
        agent::JobRecords records)
      : o_(std::move(options)),
        records_(std::move(records)),
        binder_(std::move(binder)),
        cgroups_(std::move(cgroups)),
        stagers_(std::make_shared<agent::StagerPool>(o_.data_plane)) {}

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
      if (ended.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
          ended.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          ended.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          ended.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        std::fprintf(stderr, "loomd: the controller refused this agent: %s\n",
                     ended.error_message().c_str());
        status = 1;
        break;
      }
      spdlog::warn("lost the controller at {} ({}); reconnecting, this node's jobs keep running",
                   o_.controller, ended.error_message());
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
    v1::Launch launch;
    std::unique_ptr<agent::JobStorage> storage;  // its slice and staging on this node
    std::mutex mutex;  // guards tasks and daemon: kill() may come while they start
    // Its cgroup level, loom/<agent's level>/job_<id>/, removed once its tasks' cgroups
    // (the leaves, removed with the tasks below, destroyed first) are gone.
    struct CgroupLevel {
      const agent::CgroupTree* tree = nullptr;
      std::string name;
      ~CgroupLevel() {
        if (tree != nullptr) tree->remove_level(name);
      }
    } level;
    std::vector<agent::Task> tasks;
    // An MPI job's node other than its first: Open MPI's daemon, all but its command line,
    // until mpirun asks for it through loom-rsh (exec()).
    std::optional<agent::TaskSpec> daemon;
    // What was reported when its tasks started here (the ranks' applied bindings); sent
    // again at each registration, for a controller that restarted before it stored it.
    v1::JobStarted started;
    std::atomic<bool> killed{false};  // a kill came: no staging starts or goes on
  };

  // The job's record as it runs: its launch, what it reported started, and its tasks.
  static agent::JobRecord running_record(
      const Job& job, std::vector<std::pair<std::uint32_t, agent::TaskRecord>> ranks) {
    agent::JobRecord r;
    r.id = job.id;
    r.launch = job.launch;
    r.started = job.started;
    r.ranks = std::move(ranks);
    r.daemon = job.daemon.has_value();
    return r;
  }
  // Not fatal: the job runs on, but a restart of this agent would lose it (said so).
  void save(const agent::JobRecord& record) const {
    if (auto saved = records_.save(record); !saved) spdlog::error("{}", saved.error().to_string());
  }
  std::shared_ptr<Job> make_job(const v1::Launch& launch) {
    auto job = std::make_shared<Job>();
    job->id = JobId(launch.job());
    job->launch = launch;
    job->storage = std::make_unique<agent::JobStorage>(launch, o_.name, o_.shm_dir, stagers_);
    job->level.tree = &cgroups_;
    job->level.name = job_level(job->id);
    return job;
  }
  // Where a job's task cgroups go: one level per job, a leaf per task (rank_<r>).
  std::string job_level(JobId id) const { return fmt::format("{}/job_{}", o_.cgroup, id.value()); }

  // The state directory's records: jobs still running are adopted and waited for again;
  // ends not yet acknowledged are reported at the next registration.
  void recover() {
    for (agent::JobRecord& record : records_.load_all()) {
      const JobId id = record.id;
      if (record.launching) {
        // The agent before this one stopped while starting the job: whatever of it started
        // is killed, and the job reported failed here.
        for (std::uint32_t rank : *record.launching) {
          if (auto cgroup = cgroups_.open(fmt::format("{}/rank_{}", job_level(id), rank)))
            (void)cgroup->kill_all();
        }
        cgroups_.remove_level(job_level(id));
        v1::JobEnded e;
        e.set_job(id.value());
        e.set_exit_code(127);
        e.set_error("the agent stopped while starting the job");
        finish(id, e);
        continue;
      }
      if (record.ended) {
        std::lock_guard lock(jobs_mutex_);
        ended_[id] = *record.ended;
        continue;
      }
      auto job = make_job(record.launch);
      job->id = id;
      job->started = record.started;
      if (record.daemon) {
        abandon(*job, "its agent restarted before Open MPI's daemon started here");
        continue;
      }
      std::string lost;
      for (const auto& [rank, tr] : record.ranks) {
        auto task = agent::Task::adopt(cgroups_, tr);
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
      {
        std::lock_guard lock(jobs_mutex_);
        jobs_[id] = job;
      }
      start_thread([this, job] { complete(job); });
    }
    // Persistent buffers are mounted again where a restart of the machine unmounted them.
    for (const Config::NvmeDevice& device : o_.nvme) {
      for (const std::string& name : burstbuffer::buffers_on(device.path)) {
        if (auto b = burstbuffer::Slice::attach(burstbuffer::buffer_image(device.path, name),
                                                burstbuffer::buffer_mount(device.path, name));
            !b) {
          spdlog::error("burst buffer {} on {}: {}", name, device.path, b.error().to_string());
        }
      }
    }
    // So are cgroups no adopted task holds (a launch cut short before its record).
    std::vector<std::string> held;
    {
      std::lock_guard lock(jobs_mutex_);
      for (const auto& [id, job] : jobs_) {
        for (const agent::Task& task : job->tasks) held.push_back(task.record().cgroup_name);
      }
    }
    for (const std::string& name : cgroups_.sweep(o_.cgroup, held))
      spdlog::info("killed and removed the orphaned cgroup loom/{}", name);
    // Slices no job here holds (a launch cut short, a teardown interrupted) are orphans.
    for (const Config::NvmeDevice& device : o_.nvme) {
      for (std::uint64_t orphan : burstbuffer::slices_on(device.path)) {
        std::lock_guard lock(jobs_mutex_);
        if (jobs_.contains(JobId(orphan))) continue;
        if (auto removed = burstbuffer::remove_slice(device.path, orphan); !removed) {
          spdlog::error("cannot remove job {}'s orphaned slice on {}: {}", orphan, device.path,
                        removed.error().to_string());
        } else {
          spdlog::info("removed job {}'s orphaned slice on {}", orphan, device.path);
        }
      }
    }
    for (std::uint64_t orphan : agent::shm_jobs_on(o_.shm_dir)) {
      std::lock_guard lock(jobs_mutex_);
      if (jobs_.contains(JobId(orphan))) continue;
      if (auto removed = agent::remove_shm_job_dir(o_.shm_dir, orphan); !removed) {
        spdlog::error("job {}'s orphaned shared-memory directory: {}", orphan,
                      removed.error().to_string());
      } else {
        spdlog::info("removed job {}'s orphaned shared-memory directory in {}", orphan,
                     o_.shm_dir.string());
      }
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
    hello.mutable_hello()->set_data_address(o_.data_address);
    v1::CgroupInfo* cgroup = hello.mutable_hello()->mutable_cgroup();
    cgroup->set_version(cgroups_.version() == agent::CgroupVersion::kV2 ? "v2" : "v1");
    cgroup->set_layout(cgroups_.layout());
    for (const std::string& c : cgroups_.enforced()) cgroup->add_enforced(c);
    for (const std::string& note : cgroups_.notes()) cgroup->add_not_enforced(note);
    for (const Config::NvmeDevice& d : o_.nvme) {
      v1::NvmeDevice* device = hello.mutable_hello()->add_nvme();
      device->set_path(d.path);
      if (d.numa) device->set_numa(*d.numa);
      device->set_capacity(d.capacity);
      for (const std::string& name : burstbuffer::buffers_on(d.path))
        hello.mutable_hello()->add_buffers(name);
    }
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
    for (const v1::FromAgent& started : started_jobs()) write(started);
    for (v1::ToAgent command; stream->Read(&command);) {
      if (command.has_registered())
        spdlog::info("registered with {} as {}", o_.controller, o_.name);
      if (command.has_launch()) launch(command.launch());
      if (command.has_kill())
        kill(JobId(command.kill().job()), std::chrono::seconds(command.kill().grace_s()),
             command.kill().finish());
      if (command.has_exec()) exec(command.exec());
      if (command.has_forget()) forget(JobId(command.forget().job()));
      if (command.has_buffer()) start_thread([this, c = command.buffer()] { buffer(c); });
    }
    close_stream();
    return stream->Finish();
  }

  // Every job here whose tasks started, as it was reported then.
  std::vector<v1::FromAgent> started_jobs() {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::lock_guard lock(jobs_mutex_);
      for (const auto& [id, job] : jobs_) jobs.push_back(job);
    }
    std::vector<v1::FromAgent> messages;
    for (const std::shared_ptr<Job>& job : jobs) {
      std::lock_guard lock(job->mutex);
      if (job->started.job() != 0) *messages.emplace_back().mutable_started() = job->started;
    }
    return messages;
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

  // Every heartbeat interval: a heartbeat, and the progress of every copy under way.
  void send_heartbeats() {
    v1::FromAgent beat;
    beat.mutable_heartbeat();
    std::unique_lock lock(jobs_mutex_);
    while (!stopped_.load()) {
      wake_.wait_for(lock, o_.heartbeat, [this] { return stopped_.load(); });
      std::vector<v1::FromAgent> reports;
      for (const auto& [id, job] : jobs_) {
        if (job->storage && job->storage->staging())
          *reports.emplace_back().mutable_staging() = job->storage->report();
      }
      lock.unlock();
      write(beat);
      for (const v1::FromAgent& report : reports) write(report);
      lock.lock();
    }
  }

  void send_staging(const Job& job, bool out = false) {
    v1::FromAgent message;
    *message.mutable_staging() = job.storage->report();
    if (out) message.mutable_staging()->set_out(true);
    if (message.staging().files_size() > 0) write(message);
  }

  void start_thread(std::function<void()> body) {
    // Join the threads of jobs that have ended, so that an agent running for months does
    // not accumulate finished threads.
    std::erase_if(waiters_, [](Waiter& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    waiters_.push_back({std::thread([body = std::move(body), done] {
                          body();
                          done->store(true);
                        }),
                        done});
  }

  void launch(const v1::Launch& launch) {
    const JobId id(launch.job());
    auto job = make_job(launch);
    // Recorded before anything starts: an agent that dies while launching leaves a record
    // that says so (and which cgroups and slice to clean), never tasks that no record knows.
    agent::JobRecord record;
    record.id = id;
    record.launch = launch;
    record.launching.emplace();
    for (const v1::Rank& rank : launch.ranks()) record.launching->push_back(rank.rank());
    save(record);
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_[id] = job;
    }
    start_thread([this, job, launch] {
      if (start(job, launch)) complete(job);
    });
  }

  // The job's slice and stage-in, then its ranks. False when it ended instead (reported).
  bool start(const std::shared_ptr<Job>& job, const v1::Launch& launch) {
    const JobId id = job->id;
    const v1::JobSpec& spec = launch.spec();
    if (auto prepared = job->storage->prepare(job->killed); !prepared) {
      send_staging(*job);
      if (job->killed.load()) {
        end_killed(*job);
      } else {
        abandon(*job, prepared.error().message(),
                /*staging=*/prepared.error().message().starts_with("StageInFailed"));
      }
      return false;
    }
    send_staging(*job);
    std::string error;
    v1::FromAgent started;
    std::vector<std::pair<std::uint32_t, agent::TaskRecord>> ranks;
    std::unique_lock lock(job->mutex);
    if (job->killed.load()) {
      lock.unlock();
      (void)job->storage->teardown();
      end_killed(*job);
      return false;
    }
    // Each rank's binding on this machine; reported as the ranks' binding once started.
    std::vector<hwtopo::Binding> bindings;
    for (const v1::Rank& rank : launch.ranks()) {
      const std::vector<unsigned> cores(rank.cores().begin(), rank.cores().end());
      auto binding = binder_.resolve(cores, rank.numa());
      if (!binding) {
        error = binding.error().to_string();
        break;
      }
      bindings.push_back(std::move(*binding));
      v1::RankBinding* bound = started.mutable_started()->add_ranks();
      bound->set_rank(rank.rank());
      for (unsigned pu : bindings.back().applied_pus) bound->add_cpus(pu);
      if (bindings.back().applied_numa) bound->add_numa(*bindings.back().applied_numa);
    }
    // What the agent starts: each rank as a task; for an MPI job, mpirun as one task over
    // the node's ranks (its cgroup holds them all), the ranks bound by loom-rank.
    std::vector<std::pair<unsigned, agent::TaskSpec>> tasks;
    auto task_for = [&](unsigned rank, std::vector<std::string> argv) {
      agent::TaskSpec t;
      t.cgroup_name = fmt::format("{}/rank_{}", job_level(id), rank);
      t.pids_max = o_.pids_max;
      t.swap_limit = o_.swap;
      t.argv = std::move(argv);
      t.environment.insert(spec.environment().begin(), spec.environment().end());
      for (const auto& [name, value] : job->storage->environment()) t.environment[name] = value;
      if (!launch.persistent_device().empty()) {
        t.environment["LOOM_BB_PERSISTENT_DIR"] =
            burstbuffer::buffer_mount(launch.persistent_device(), spec.bb_persistent()).string();
      }
      t.environment["LOOM_JOB_ID"] = std::to_string(id.value());
      t.environment["LOOM_RANK"] = std::to_string(rank);
      t.environment["LOOM_NTASKS"] = std::to_string(spec.tasks());
      t.environment["LOOM_NODELIST"] = launch::nodelist(job_nodes(launch));
      if (launch.array_job() != 0) {
        t.environment["LOOM_ARRAY_JOB_ID"] = std::to_string(launch.array_job());
        t.environment["LOOM_ARRAY_INDEX"] = std::to_string(launch.array_index());
      }
      t.chdir = spec.chdir();
      t.stdout_path = replace_all(output_path(id, spec.stdout_path()), "%t", std::to_string(rank));
      t.stderr_path = replace_all(output_path(id, spec.stderr_path()), "%t", std::to_string(rank));
      t.uid = launch.uid();
      t.umask = spec.has_umask() ? spec.umask() & 0777 : 022;
      t.allow_root = o_.allow_root;
      t.status_path = o_.state_dir / fmt::format("job_{}_rank_{}.status", id.value(), rank);
      t.keeper = o_.keeper;
      return t;
    };
    std::vector<std::string> command =
        spec.script().empty() ? std::vector<std::string>(spec.argv().begin(), spec.argv().end())
                              : std::vector<std::string>{"/bin/sh", "-c", spec.script()};
    if (error.empty() && spec.mpi()) {
      auto mpi = mpi_task(launch, bindings, command, task_for);
      if (!mpi) {
        error = mpi.error().to_string();
      } else if (launch.node_index() > 0) {
        job->daemon = std::move(mpi->second);
      } else {
        tasks.push_back(std::move(*mpi));
      }
    } else if (error.empty()) {
      for (std::size_t i = 0; i < bindings.size(); ++i) {
        agent::TaskSpec t = task_for(launch.ranks(static_cast<int>(i)).rank(), command);
        t.memory_limit = launch.ranks(static_cast<int>(i)).memory_bytes();
        t.binding = bindings[i];
        t.environment["LOOM_RANK_CORES"] =
            fmt::format("{}", fmt::join(bindings[i].applied_pus, ","));
        tasks.emplace_back(launch.ranks(static_cast<int>(i)).rank(), std::move(t));
      }
    }
    for (auto& [rank, t] : tasks) {
      if (!error.empty()) break;
      auto task = agent::Task::start(cgroups_, t);
      if (!task) {
        error = task.error().to_string();
        break;
      }
      ranks.emplace_back(rank, task->record());
      job->tasks.push_back(std::move(*task));
    }
    started.mutable_started()->set_job(id.value());
    if (error.empty()) job->started = started.started();
    lock.unlock();
    if (!error.empty()) {
      abandon(*job, error);
      return false;
    }
    save(running_record(*job, std::move(ranks)));
    write(started);
    return !job->daemon;  // a node waiting for its daemon is completed once that starts
  }

  // Open MPI's daemon for an MPI job on this node, asked for by mpirun on the job's first
  // node through loom-rsh and the controller, which checked who asks. Checked again here:
  // only orted, as this agent's PATH finds it, only for a job that waits for it.
  void exec(const v1::Exec& e) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard lock(jobs_mutex_);
      if (auto it = jobs_.find(JobId(e.job())); it != jobs_.end()) job = it->second;
    }
    if (!job) {
      spdlog::warn("job {}: asked for Open MPI's daemon, but the job does not run here", e.job());
      return;
    }
    std::unique_lock lock(job->mutex);
    if (!job->daemon) {  // loom-rsh asked again, after a controller restart: nothing starts twice
      spdlog::info("job {}: Open MPI's daemon was started here already", e.job());
      return;
    }
    agent::TaskSpec t = std::move(*job->daemon);
    job->daemon.reset();
    std::string error;
    auto arguments = launch::daemon_arguments({e.argv().begin(), e.argv().end()});
    const std::optional<fs::path> orted = find_program("orted");
    if (!arguments) {
      error = arguments.error().message();
    } else if (!orted) {
      error = "cannot find Open MPI's orted in the agent's PATH";
    } else {
      t.argv = {orted->string()};
      t.argv.insert(t.argv.end(), arguments->begin(), arguments->end());
      if (auto task = agent::Task::start(cgroups_, t)) {
        save(running_record(*job, {{job->launch.ranks(0).rank(), task->record()}}));
        job->tasks.push_back(std::move(*task));
      } else {
        error = task.error().to_string();
      }
    }
    lock.unlock();
    if (!error.empty()) {
      start_thread([this, job, error] { abandon(*job, "Open MPI's daemon: " + error); });
      return;
    }
    spdlog::info("job {}: Open MPI's daemon started", e.job());
    start_thread([this, job] { complete(job); });
  }

  static std::optional<fs::path> find_program(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
      const std::size_t end = std::min(dirs.find(':', start), dirs.size());
      const fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
      if (!dirs.substr(start, end - start).empty() && ::access(candidate.c_str(), X_OK) == 0)
        return candidate;
      start = end + 1;
    }
    return std::nullopt;
  }

  // Makes or destroys a persistent buffer, and says so. A destroy names no device when the
  // controller found the buffer left over on this node: every device is looked at.
  void buffer(const v1::BufferCommand& c) {
    v1::FromAgent done;
    done.mutable_buffer()->set_name(c.name());
    done.mutable_buffer()->set_destroy(c.destroy());
    Status result;
    if (c.destroy()) {
      for (const Config::NvmeDevice& d : o_.nvme) {
        if (!c.device().empty() && d.path != c.device()) continue;
        auto found = burstbuffer::Slice::attach(burstbuffer::buffer_image(d.path, c.name()),
                                                burstbuffer::buffer_mount(d.path, c.name()));
        if (found) result = found->destroy();
      }
    } else if (!burstbuffer::Slice::attach(burstbuffer::buffer_image(c.device(), c.name()),
                                           burstbuffer::buffer_mount(c.device(), c.name()))) {
      auto made = burstbuffer::Slice::create({burstbuffer::buffer_image(c.device(), c.name()),
                                              burstbuffer::buffer_mount(c.device(), c.name()),
                                              c.bytes(), c.uid(), c.gid(), 0700, true});
      if (!made) result = std::unexpected(made.error());
    }
    if (!result) done.mutable_buffer()->set_error(result.error().to_string());
    spdlog::info("burst buffer {} {}{}", c.name(), c.destroy() ? "destroyed" : "made",
                 result ? "" : ": " + result.error().to_string());
    write(done);
  }

  // An MPI job's process on this node, in one cgroup holding all the node's ranks (their
  // PUs and memory), each rank bound by loom-rank to its own placement: mpirun on the
  // job's first node; on the others Open MPI's daemon, whose command line mpirun sends
  // later through loom-rsh (exec()), so its argv is left empty here.
  Result<std::pair<unsigned, agent::TaskSpec>> mpi_task(
      const v1::Launch& launch, const std::vector<hwtopo::Binding>& bindings,
      const std::vector<std::string>& command,
      const std::function<agent::TaskSpec(unsigned, std::vector<std::string>)>& task_for) {
    if (launch.ranks_size() == 0)
      return make_error(ErrorCode::kInvalidArgument, "an MPI job with no rank on this node");
    std::vector<launch::RankBinding> ranks;
    hwtopo::Binding all;  // the union: the task's cgroup
    std::set<unsigned> pus;
    std::set<std::optional<unsigned>> numas;
    std::uint64_t memory = 0;
    for (std::size_t i = 0; i < bindings.size(); ++i) {
      ranks.push_back({launch.ranks(static_cast<int>(i)).rank(), bindings[i].applied_pus,
                       bindings[i].applied_numa});
      pus.insert(bindings[i].applied_pus.begin(), bindings[i].applied_pus.end());
      numas.insert(bindings[i].applied_numa);
      memory += launch.ranks(static_cast<int>(i)).memory_bytes();
    }
    all.applied_pus.assign(pus.begin(), pus.end());
    if (numas.size() == 1) all.applied_numa = *numas.begin();
    const std::vector<launch::NodeRanks> nodes = job_nodes(launch);
    std::vector<std::string> argv;
    if (launch.node_index() == 0) {
      // Open MPI finds the other nodes by name, and decides that a host is local by its
      // name: the first is this host's, the others must resolve.
      for (std::size_t i = 1; i < nodes.size(); ++i) {
        if (const std::string failed = resolve_error(nodes[i].node); !failed.empty()) {
          return make_error(ErrorCode::kFailedPrecondition,
                            fmt::format("{} does not resolve here ({}): an MPI job needs every "
                                        "node's name to be its resolvable hostname",
                                        nodes[i].node, failed));
        }
      }
      std::vector<launch::NodeRanks> hosts = nodes;
      char host[256] = {};
      ::gethostname(host, sizeof(host) - 1);
      hosts.front().node = host;
      // Installed beside loomd; in a build tree, in mpi_launcher/ beside agent/.
      const fs::path here = fs::read_symlink("/proc/self/exe").parent_path();
      const fs::path launcher =
          fs::exists(here / "loom-rank") ? here : here.parent_path() / "mpi_launcher";
      const bool spans = nodes.size() > 1;
      launch::MpiPlan plan{hosts, (launcher / "loom-rank").string(),
                           spans ? (launcher / "loom-rsh").string() : "",
                           spans ? interface_network(o_.data_plane.fabric.interface) : "", command};
      argv = launch::mpirun_argv(plan);
    }
    agent::TaskSpec t = task_for(ranks.front().rank, std::move(argv));
    t.environment["LOOM_RANK_BINDING"] = launch::encode_bindings(ranks);
    t.environment["LOOM_CONTROLLER"] = o_.controller;  // for loom-rsh
    // Ranks that share PUs (a simulated node mapped onto fewer real ones) must not
    // busy-poll: Open MPI counts its slots, not PUs, and spinning ranks starve the rank
    // they wait for (16 ranks on 2 PUs stalled for minutes without this).
    std::size_t bound = 0;
    for (const launch::RankBinding& r : ranks) bound += r.pus.size();
    if (bound > pus.size()) t.environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
    // A file per rank (%t): opened by loom-rank; mpirun's and orted's own messages go to
    // the node's first rank's.
    if (launch.spec().stdout_path().find("%t") != std::string::npos ||
        launch.spec().stderr_path().find("%t") != std::string::npos) {
      t.environment["LOOM_RANK_OUTPUT"] =
          output_path(JobId(launch.job()), launch.spec().stdout_path());
      t.environment["LOOM_RANK_ERROR"] =
          output_path(JobId(launch.job()), launch.spec().stderr_path());
    }
    t.environment.erase("LOOM_RANK");  // each rank's, set by loom-rank
    t.binding = std::move(all);
    t.memory_limit = memory;
    return std::pair{ranks.front().rank, std::move(t)};
  }

  static std::vector<launch::NodeRanks> job_nodes(const v1::Launch& launch) {
    std::vector<launch::NodeRanks> nodes;
    for (const v1::JobNode& n : launch.nodes()) nodes.push_back({n.name(), n.ranks()});
    return nodes;
  }

  // An output file's name with the job's id (%j) and the node's name (%N); a rank's own
  // (%t) is left for the caller, or for loom-rank.
  std::string output_path(JobId id, const std::string& pattern) const {
    return replace_all(replace_all(pattern, "%j", std::to_string(id.value())), "%N", o_.name);
  }

  // Why `host` does not resolve (getaddrinfo's words), or "" when it does. A temporary
  // failure is tried again a few times, as a resolver would.
  static std::string resolve_error(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    for (int attempt = 0;; ++attempt) {
      addrinfo* found = nullptr;
      const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
      if (found != nullptr) ::freeaddrinfo(found);
      if (status == 0) return "";
      if (status != EAI_AGAIN || attempt == 3)
        return status == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(status);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // The IPv4 network of an interface, "198.18.0.16/28", for Open MPI's oob and btl tcp
  // traffic: the job's ranks talk over the network the data plane uses. "" when there is
  // none (Open MPI chooses).
  static std::string interface_network(const std::string& name) {
    if (name.empty()) return "";
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "";
    std::string network;
    for (ifaddrs* a = list; a != nullptr && network.empty(); a = a->ifa_next) {
      if (a->ifa_addr == nullptr || a->ifa_netmask == nullptr ||
          a->ifa_addr->sa_family != AF_INET || name != a->ifa_name)
        continue;
      const std::uint32_t address =
          ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
      const std::uint32_t mask =
          ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_netmask)->sin_addr.s_addr);
      const std::uint32_t net = address & mask;
      network = fmt::format("{}.{}.{}.{}/{}", net >> 24, (net >> 16) & 255, (net >> 8) & 255,
                            net & 255, std::popcount(mask));
    }
    ::freeifaddrs(list);
    return network;
  }

  // A job that cannot run here: what started of it is killed, its slice removed, and it
  // ends failed with why.
  void abandon(Job& job, const std::string& error, bool staging = false) {
    for (agent::Task& task : job.tasks) (void)task.kill();
    for (agent::Task& task : job.tasks) (void)task.wait();
    (void)job.storage->teardown();
    v1::JobEnded e;
    e.set_job(job.id.value());
    e.set_exit_code(127);
    e.set_error(error);
    e.set_staging(staging);
    finish(job.id, e);
  }

  // Killed before its ranks started (while staging in): it ends as a SIGTERMed job would.
  void end_killed(Job& job) {
    v1::JobEnded e;
    e.set_job(job.id.value());
    e.set_exit_code(128 + SIGTERM);
    e.set_signal(SIGTERM);
    finish(job.id, e);
  }

  // Waits for the job's tasks (the first failing rank's status is the job's), stages out
  // unless the job was killed (cancelled, past its walltime, failed elsewhere), removes
  // the slice and reports the end.
  void complete(const std::shared_ptr<Job>& job) {
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
      v1::Usage* usage = e.mutable_usage();
      usage->set_cpu_seconds(usage->cpu_seconds() + status->usage.cpu_seconds);
      if (status->usage.memory_peak_bytes) {
        usage->set_memory_peak_bytes(
            std::max(usage->memory_peak_bytes(), *status->usage.memory_peak_bytes));
      }
    }
    if (!job->killed.load() && job->storage->stages_out()) {
      send_staging(*job, /*out=*/true);
      Status staged = job->storage->stage_out(job->killed);
      send_staging(*job, /*out=*/true);
      if (!staged && e.error().empty() && !job->killed.load()) {
        e.set_error(staged.error().message());
        e.set_staging(true);
      }
    }
    if (auto removed = job->storage->teardown(); !removed) {
      spdlog::error("job {}: removing its slice: {}", job->id.value(), removed.error().to_string());
    }
    finish(job->id, e);
  }

  // The job's processes here are all gone: recorded, then reported (again at every
  // registration until the controller says Forget).
  void finish(JobId id, const v1::JobEnded& e) {
    agent::JobRecord record;
    if (auto found = records_.load(id)) {
      record = std::move(*found);
    } else {
      record.id = id;  // a record lost meanwhile: the end is what matters now
    }
    record.launching.reset();
    record.ended = e;
    save(record);
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
    records_.remove(id);
  }

  // SIGTERM now and SIGKILL after the grace period; at once without one. With `finish`
  // the job ended well elsewhere (its mpirun): what is left here stops, and the job's end
  // here goes on as if its tasks had ended (stage-out included).
  void kill(JobId id, std::chrono::seconds grace, bool finish = false) {
    std::lock_guard lock(jobs_mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (!finish) it->second->killed.store(true);
    std::lock_guard tasks(it->second->mutex);
    if (it->second->daemon) {  // nothing started here yet, and nothing will
      it->second->daemon.reset();
      start_thread([this, job = it->second] {
        if (auto removed = job->storage->teardown(); !removed) {
          spdlog::error("job {}: removing its slice: {}", job->id.value(),
                        removed.error().to_string());
        }
        end_killed(*job);
      });
      return;
    }
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
      if (wake_.wait_until(lock, due) != std::cv_status::timeout)
        continue;  // re-check: new or earlier kills
      kill_at_.erase(kill_at_.begin());
      if (auto it = jobs_.find(id); it != jobs_.end()) {
        spdlog::info("job {}: still running when its kill grace ran out; SIGKILL", id.value());
        std::lock_guard tasks(it->second->mutex);
        for (agent::Task& task : it->second->tasks) (void)task.kill();
      }
    }
  }

  Options o_;
  agent::JobRecords records_;  // in o_.state_dir
  hwtopo::Binder binder_;
  const agent::CgroupTree cgroups_;
  std::shared_ptr<agent::StagerPool> stagers_;
  std::atomic<bool> stopped_{false};
  std::mutex write_mutex_;  // guards the stream pointers and writes to the stream
  grpc::ClientContext* context_ = nullptr;
  grpc::ClientReaderWriter<v1::FromAgent, v1::ToAgent>* stream_ =
      nullptr;                                       // null while disconnected
  std::mutex jobs_mutex_;                            // guards jobs_, ended_ and kill_at_
  std::map<JobId, std::shared_ptr<Job>> jobs_;       // running here
  std::map<JobId, v1::JobEnded> ended_;              // ended here, not yet acknowledged
  std::multimap<Clock::time_point, JobId> kill_at_;  // SIGKILLs due
  std::condition_variable_any wake_;  // stop, a kill due, a heartbeat due, a reconnection
  std::thread killer_{
      [this] { deliver_kills(); }};  // after what it uses, so it starts once that is built
  struct Waiter {
    std::thread thread;  // waits for one job's tasks; joined once done is set
    std::shared_ptr<std::atomic<bool>> done;
  };
  // Never destroyed: waiter threads may be blocked on tasks that outlive the agent by
  // design, and are left to the process's exit (see main).
  std::vector<Waiter> waiters_;  // used by the stream reader thread (and recover(), before it)
};

// A configured NVMe device with no NUMA node given takes the one hwloc reports for the
// block device its filesystem is on (the sysfs path of a partition names its disk too).
void match_block_devices(std::vector<Config::NvmeDevice>& devices,
                         const hwtopo::Topology& topology) {
  for (Config::NvmeDevice& device : devices) {
    struct stat st {};
    if (device.numa || ::stat(device.path.c_str(), &st) != 0) continue;
    std::error_code ec;
    const std::string sysfs =
        fs::canonical(fmt::format("/sys/dev/block/{}:{}", major(st.st_dev), minor(st.st_dev)), ec)
            .string();
    if (ec) continue;
    for (const hwtopo::BlockDevice& block : topology.block_devices) {
      const bool holds = sysfs.find("/" + block.name + "/") != std::string::npos ||
                         sysfs.ends_with("/" + block.name);
      if (!block.numa || !holds) continue;
      device.numa = block.numa;
      spdlog::info("NVMe device {} is on {}, local to NUMA node {}", device.path, block.name,
                   *block.numa);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loomd: the Loom node agent"};
  std::string controller, name, cgroup, xml, synthetic, config_file, state_dir, shm_dir;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  name = host;
  app.add_option("--controller", controller,
                 "The controller's HOST:PORT (default: controller.address)");
  app.add_option("--name", name, "This node's name")->capture_default_str();
  app.add_option(
      "--cgroup", cgroup,
      "This agent's cgroup under loom/, where its jobs' cgroups go (default: the node's name)");
  app.add_option("--state-dir", state_dir,
                 "Where this agent records its jobs (default: agent.state_dir)");
  app.add_option(
      "--shm-dir", shm_dir,
      "Where MPI jobs' shared-memory directories go, DIR/job_ID (default: agent.shm_dir)");
  auto* x = app.add_option("--xml", xml, "Simulate a node with this hwloc XML topology");
  app.add_option("--synthetic", synthetic, "Simulate a node with this hwloc synthetic topology")
      ->excludes(x);
  app.add_option("--config", config_file, loom::kConfigHelp);
  std::string export_dir, data_listen = "127.0.0.1:0";
  app.add_option("--export", export_dir,
                 "Be a storage agent serving this directory's files for staging (it runs no jobs)");
  std::vector<std::string> nvme;
  app.add_option(
      "--nvme", nvme,
      "An NVMe device for burst buffers, PATH=SIZE[:NUMA]; replaces agent.nvme (repeatable)");
  std::string fabric_interface;
  app.add_option("--fabric-interface", fabric_interface,
                 "The fabric interface staging uses; replaces fabric.interface");
  app.add_option("--data-listen", data_listen,
                 "A storage agent's Storage service address, HOST:PORT (port 0: any)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    std::fprintf(stderr, "loomd: %s\n", e.to_string().c_str());
    return 1;
  };
  auto config = start_program("loomd", config_file.empty()
                                           ? std::nullopt
                                           : std::optional<std::filesystem::path>(config_file));
  if (!config) return fail(config.error());
  if (controller.empty()) controller = config->controller.address;

  Result<hwtopo::Topology> topology = !xml.empty()         ? hwtopo::load_xml(xml)
                                      : !synthetic.empty() ? hwtopo::load_synthetic(synthetic)
                                                           : hwtopo::load_live();
  if (!topology) return fail(topology.error());
  const std::string topology_json = hwtopo::to_json(*topology).dump();
  Result<hwtopo::Binder> binder = xml.empty() && synthetic.empty()
                                      ? hwtopo::Binder::for_live_machine()
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
                  state_dir.empty() ? std::filesystem::path(config->agent.state_dir)
                                    : std::filesystem::path(state_dir),
                  shm_dir.empty() ? std::filesystem::path(config->agent.shm_dir)
                                  : std::filesystem::path(shm_dir),
                  config->agent.allow_root_jobs,
                  config->agent.pids_max,
                  config->agent.swap,
                  config->controller.heartbeat_interval,
                  std::filesystem::read_symlink("/proc/self/exe").parent_path() / "loom-keeper",
                  config->agent.nvme,
                  "",
                  {}};
  if (::access(options.keeper.c_str(), X_OK) != 0) {
    return fail(Error(ErrorCode::kNotFound, fmt::format("cannot find {}, which starts every task",
                                                        options.keeper.string())));
  }
  // Made before any job runs, so that no user makes it first in a world-writable /dev/shm.
  // Only by root: an agent run as anybody else makes nothing (the controller refuses it
  // when it registers), least of all a base of its user's that root's agents would refuse.
  if (::geteuid() == 0) {
    if (auto made = agent::make_shm_base(options.shm_dir); !made) return fail(made.error());
  }
  auto choice = agent::parse_cgroup_choice(config->agent.cgroup);
  if (!choice) return fail(choice.error());
  auto cgroups = agent::CgroupTree::find(*choice);
  if (!cgroups) return fail(cgroups.error());
  // As for the shm base: an agent that is not root works in no cgroup (and is refused).
  if (::geteuid() == 0) {
    if (auto entered = cgroups->enter(options.cgroup); !entered) return fail(entered.error());
  }
  spdlog::info(
      "cgroup {} ({}): jobs get {} limits",
      cgroups->version() == agent::CgroupVersion::kV2 ? "v2" : "v1", cgroups->layout(),
      cgroups->enforced().empty() ? "no" : fmt::format("{}", fmt::join(cgroups->enforced(), ", ")));
  for (const std::string& note : cgroups->notes()) spdlog::warn("cgroup: {}", note);
  options.data_plane.fabric = {
      config->fabric.provider,
      fabric_interface.empty() ? config->fabric.interface : fabric_interface};
  if (!nvme.empty()) {
    options.nvme.clear();
    for (const std::string& text : nvme) {
      const std::size_t eq = text.find('='),
                        colon = text.find(':', eq == std::string::npos ? 0 : eq);
      auto bytes =
          eq == std::string::npos
              ? Result<Bytes>(make_error(ErrorCode::kInvalidArgument, "expected PATH=SIZE[:NUMA]"))
              : parse_bytes(text.substr(
                    eq + 1, colon == std::string::npos ? std::string::npos : colon - eq - 1));
      if (!bytes) return fail(Error(bytes.error()).with_context("--nvme " + text));
      Config::NvmeDevice device{text.substr(0, eq), bytes->count(), std::nullopt};
      if (colon != std::string::npos) {
        unsigned numa = 0;
        const char* end = text.data() + text.size();
        if (auto [at, ec] = std::from_chars(text.data() + colon + 1, end, numa);
            ec != std::errc() || at != end) {
          return fail(
              Error(ErrorCode::kInvalidArgument,
                    fmt::format("--nvme {}: the NUMA node after ':' must be a number", text)));
        }
        device.numa = numa;
      }
      options.nvme.push_back(std::move(device));
    }
  }
  match_block_devices(options.nvme, *topology);
  // A storage agent: its Storage service, for as long as the process lives.
  std::unique_ptr<burstbuffer::StorageServer> storage;
  std::unique_ptr<grpc::Server> data_server;
  if (!export_dir.empty()) {
    auto opened = burstbuffer::StorageServer::open(export_dir, options.data_plane);
    if (!opened) return fail(opened.error());
    storage = std::move(*opened);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(data_listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(storage.get());
    data_server = builder.BuildAndStart();
    if (!data_server || port == 0)
      return fail(Error(ErrorCode::kUnavailable, fmt::format("cannot listen on {}", data_listen)));
    options.data_address =
        fmt::format("{}:{}", data_listen.substr(0, data_listen.rfind(':')), port);
    spdlog::info("exporting {} for staging at {}", export_dir, options.data_address);
  }
  auto records = agent::JobRecords::open(options.state_dir);
  if (!records) return fail(records.error());
  auto agent =
      std::make_unique<Agent>(options, std::move(*binder), std::move(*cgroups),
                              std::move(*records));  // never destroyed: see Agent::waiters_
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal == SIGUSR1) return;
    spdlog::info("signal {}: leaving; this node's jobs keep running for the next agent", signal);
    agent->stop();
  });
  const int status = agent->run(topology_json);
  ::kill(::getpid(),
         SIGUSR1);  // ends the waiter if no signal came; pending and harmless if one did
  signal_waiter.join();
  agent->join_killer();
  spdlog::default_logger()->flush();
  // Waiters blocked on running tasks end with the process, not before it: their jobs are
  // in the state directory for the next agent.
  std::_Exit(status);
}
