// loomctld: the controller. Serves the CLI and the agents over gRPC (service.hpp) and runs
// the core (loom/controller/core.hpp) on a thread of its own, fed by an inbox (inbox.hpp).
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <thread>

#include "inbox.hpp"
#include "loom/common/config.hpp"
#include "loom/controller/core.hpp"
#include "loom/controller/job_manager.hpp"
#include "loom/proto/tls.hpp"
#include "loom/sched/configured.hpp"
#include "metrics_server.hpp"
#include "service.hpp"

namespace {

// SIGHUP: the file's [scheduler] section and [[accounts]] from the next pass on. A file that does
// not parse changes nothing; the other keys take effect at a restart.
void reload_policy(const std::optional<std::filesystem::path>& path,
                   loom::controller::Inbox& inbox) {
  auto keep = [](const loom::Error& error) {
    spdlog::error("SIGHUP: {}; the scheduler keeps its policy", error.to_string());
  };
  auto config = loom::load_config(path);
  if (!config) return keep(config.error());
  auto policy = loom::sched::scheduler_options(config->scheduler, config->accounts, config->qos);
  if (!policy) return keep(policy.error());
  inbox.call([&](loom::controller::Core& core) { core.jobs().set_policy(std::move(*policy)); });
  spdlog::info(
      "SIGHUP: scheduler: {} order, {} backfill, {} accounts (other keys take effect at a "
      "restart)",
      config->scheduler.order, config->scheduler.backfill, config->accounts.size());
}

}  // namespace

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  using namespace loom;
  CLI::App app{"loomctld: the Loom controller"};
  std::string listen, state_dir = "/var/lib/loom";
  std::string config_file, check_config;
  app.add_option("--listen", listen,
                 "HOST:PORT to serve on; port 0 picks a free one (default: controller.address)");
  app.add_option("--state-dir", state_dir, "Where the state lives")->capture_default_str();
  app.add_option("--config", config_file, loom::kConfigHelp);
  app.add_option("--check-config", check_config,
                 "Check a configuration file and exit: 0 when it is valid, 1 with the "
                 "error (its line and key) when not");
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    (void)std::fprintf(stderr, "loomctld: %s\n", e.to_string().c_str());
    return 1;
  };
  if (!check_config.empty()) {
    auto checked = load_config(std::filesystem::path(check_config));
    if (!checked) return fail(checked.error());
    // The files tls.* name too: a bad certificate is found before a restart, not by it.
    auto tls = tls::Tls::load(checked->tls, tls::Role::kDaemon);
    if (!tls) return fail(tls.error());
    std::printf(
        "%s: valid; controller.address %s, agent.state_dir %s, scheduler %s order and "
        "%s backfill, %zu accounts, gRPC %s\n",
        check_config.c_str(), checked->controller.address.c_str(), checked->agent.state_dir.c_str(),
        checked->scheduler.order.c_str(), checked->scheduler.backfill.c_str(),
        checked->accounts.size(), tls->describe().c_str());
    return 0;
  }
  const std::optional<std::filesystem::path> config_path =
      config_file.empty() ? std::nullopt : std::optional<std::filesystem::path>(config_file);
  auto config = start_program("loomctld", config_path);
  if (!config) return fail(config.error());
  auto policy = sched::scheduler_options(config->scheduler, config->accounts, config->qos);
  if (!policy) return fail(policy.error());
  if (listen.empty()) listen = config->controller.address;

  // SIGTERM and SIGINT end the daemon, SIGHUP reads [scheduler] and [[accounts]] again: blocked
  // here, before any thread starts, and waited for below.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // After the mask: gRPC starts threads of its own with the first credentials, and a
  // signal they did not block would never reach sigwait below.
  auto tls = tls::Tls::load(config->tls, tls::Role::kDaemon);
  if (!tls) return fail(tls.error());
  tls->log();

  sched::Cluster cluster;
  controller::Inbox inbox;
  auto store = controller::open_sqlite_store(state_dir);
  if (!store) return fail(store.error());
  // Jobs ended longer ago than min_job_age stay in the store only.
  const auto now = controller::SystemClock().wall();
  auto manager = controller::JobManager::open(
      std::move(*store), cluster, std::move(*policy), now, [&inbox] { inbox.changed(); },
      (now - config->controller.min_job_age).time_since_epoch().count());
  if (!manager) return fail(manager.error());
  const controller::SystemClock clock;
  controller::Core core(cluster, *config, clock, std::move(*manager),
                        [&inbox] { inbox.changed(); });
  controller::Service service(inbox, *config, *tls);

  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, tls->server(), &port);
  builder.RegisterService(static_cast<v1::Controller::Service*>(&service));
  builder.RegisterService(static_cast<v1::AgentLink::Service*>(&service));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    return fail(Error(ErrorCode::kUnavailable, fmt::format("cannot listen on {}", listen)));
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("loomctld: listening on %s:%d\n", host.c_str(), port);
  (void)std::fflush(stdout);

  std::atomic<bool> failed = false;
  std::thread core_thread([&] {
    inbox.run(core, [&](const Error& error, bool fatal) {
      if (fatal) {
        // Nothing of the batch was answered or sent, and the core is ahead of the store:
        // this process may do nothing more. The next start reads the store as it is.
        spdlog::critical("{}; stopping at once", error.to_string());
        (void)std::fprintf(stderr, "loomctld: stopped: the state could not be written\n");
        std::_Exit(1);
      }
      spdlog::critical("{}; stopping", error.to_string());
      failed = true;
      ::kill(::getpid(), SIGTERM);  // a pass that cannot be stored stops the controller
    });
  });
  spdlog::info("scheduler: {} order, {} backfill", config->scheduler.order,
               config->scheduler.backfill);
  std::unique_ptr<controller::MetricsServer> metrics;
  if (!config->metrics.address.empty()) {
    auto started = controller::MetricsServer::start(config->metrics.address, inbox);
    if (!started) {
      // The daemons run on without it: monitoring that cannot bind is no reason to stop jobs.
      spdlog::error("{}; /metrics is not served", started.error().to_string());
    } else {
      metrics = std::move(*started);
      spdlog::info("metrics on http://{}:{}/metrics",
                   config->metrics.address.substr(0, config->metrics.address.rfind(':')),
                   metrics->port());
    }
  }
  int signal = 0;
  while (sigwait(&signals, &signal) == 0 && signal == SIGHUP) reload_policy(config_path, inbox);
  spdlog::info("signal {}: stopping", signal);
  inbox.stop_waiting();  // the calls that wait are answered: the server waits for them
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  metrics.reset();
  inbox.stop();  // nothing posts once the servers are down
  core_thread.join();
  if (failed) {
    // Non-zero, so that systemd's Restart=on-failure starts it again once the state can be
    // written (the log says why it could not).
    (void)std::fprintf(stderr, "loomctld: stopped: the state could not be written\n");
    return 1;
  }
  return 0;
}
