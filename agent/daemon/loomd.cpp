// loomd: the node agent (loom::agent::Agent), and on a storage node the Storage service
// over its export. This file reads the options and wires the parts; agent/README.md says
// what each part does.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <thread>

#include "loom/agent/agent.hpp"
#include "loom/agent/job_storage.hpp"
#include "loom/agent/nvme.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/common/config.hpp"
#include "loom/common/host_name.hpp"
#include "loom/common/programs.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"

using namespace loom;

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  CLI::App app{"loomd: the Loom node agent"};
  std::string controller, name, cgroup, xml, synthetic, config_file, state_dir, shm_dir;
  name = loom::host_name();
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
    (void)std::fprintf(stderr, "loomd: %s\n", e.to_string().c_str());
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
  // After the mask: gRPC starts threads of its own with the first credentials, and a
  // signal they did not block would never reach the waiter below.
  auto tls = tls::Tls::load(config->tls, tls::Role::kDaemon);
  if (!tls) return fail(tls.error());
  tls->log();
  const std::filesystem::path here = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  agent::AgentOptions options;
  options.controller = controller;
  options.tls_ca = config->tls.ca;
  options.name = name;
  options.cgroup = cgroup.empty() ? name : cgroup;
  options.state_dir = state_dir.empty() ? config->agent.state_dir : state_dir;
  options.shm_dir = shm_dir.empty() ? config->agent.shm_dir : shm_dir;
  options.allow_root = config->agent.allow_root_jobs;
  options.pids_max = config->agent.pids_max;
  options.swap = config->agent.swap;
  options.heartbeat = config->controller.heartbeat_interval;
  options.silent_after = config->controller.heartbeat_window();
  options.fence_after = config->agent.fence_after;
  options.keeper = here / "loom-keeper";
  // Installed beside loomd; in a build tree, in mpi_launcher/ beside agent/.
  options.launcher_dir =
      std::filesystem::exists(here / "loom-rank") ? here : here.parent_path() / "mpi_launcher";
  options.nvme = config->agent.nvme;
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
  options.data_plane.stall_timeout = config->staging.stall_timeout;
  options.data_plane.tls = *tls;
  auto h5skeleton = find_program("loom-h5skeleton", "burstbuffer");
  if (!h5skeleton) return fail(h5skeleton.error());
  options.data_plane.h5skeleton = std::move(*h5skeleton);
  if (!nvme.empty()) {
    options.nvme.clear();
    for (const std::string& text : nvme) {
      auto device = agent::parse_nvme(text);
      if (!device) return fail(Error(device.error()).with_context("--nvme " + text));
      options.nvme.push_back(std::move(*device));
    }
  }
  agent::match_block_devices(options.nvme, *topology);
  // A storage agent: its Storage service, for as long as the process lives.
  std::unique_ptr<burstbuffer::StorageServer> storage;
  std::unique_ptr<grpc::Server> data_server;
  if (!export_dir.empty()) {
    auto opened = burstbuffer::StorageServer::open(
        {export_dir, options.name, options.state_dir / "storage-writes"}, options.data_plane);
    if (!opened) return fail(opened.error());
    storage = std::move(*opened);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(data_listen, tls->server(), &port);
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
  auto agent = agent::Agent::make(std::move(options), std::move(*binder), std::move(*cgroups),
                                  std::move(*records));
  if (!agent) return fail(agent.error());
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal == SIGUSR1) return;
    (*agent)->stop();  // first: once this is logged, no copy goes on past its next range
    spdlog::info("signal {}: leaving; this node's jobs keep running for the next agent", signal);
  });
  const int status = (*agent)->run(topology_json);
  ::kill(::getpid(),
         SIGUSR1);  // ends the waiter if no signal came; pending and harmless if one did
  signal_waiter.join();
  return status;
}
