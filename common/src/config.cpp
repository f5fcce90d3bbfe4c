#include "loom/common/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <array>
#include <cstring>
#include <vector>

#include "config_values.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/log.hpp"

namespace loom {

namespace {

using namespace config_detail;

const std::array kKeys = {
    KeySpec{
        {"log.level", "string", "info",
         "Least severe message logged: trace, debug, info, warn, error, critical or off. "
         "The LOOM_LOG environment variable overrides it."},
        [](Config& config, const toml::node& value) -> Status {
          std::string level = LOOM_TRY(as_string(value));
          LOOM_TRY(log::parse_level(level));
          config.log.level = std::move(level);
          return {};
        },
        [](const Config& config) { return config.log.level; },
    },
    KeySpec{
        {"auth.admin_group", "string", "loomadm",
         "Unix group whose members, with root, are Loom's administrators: they see and "
         "cancel every job and drain nodes."},
        [](Config& config, const toml::node& value) -> Status {
          std::string group = LOOM_TRY(as_string(value));
          if (group.empty()) {
            return make_error(ErrorCode::kInvalidArgument, "must name a group, got \"\"");
          }
          config.auth.admin_group = std::move(group);
          return {};
        },
        [](const Config& config) { return config.auth.admin_group; },
    },
    KeySpec{
        {"controller.address", "string", "127.0.0.1:6820",
         "HOST:PORT of loomctld: where it listens, and where the CLI and the agents find it. "
         "LOOM_CONTROLLER and --controller override it for the CLI."},
        [](Config& config, const toml::node& value) -> Status {
          std::string address = LOOM_TRY(as_string(value));
          if (address.rfind(':') == std::string::npos) {
            return make_error(ErrorCode::kInvalidArgument,
                              fmt::format("must be HOST:PORT, got \"{}\"", address));
          }
          config.controller.address = std::move(address);
          return {};
        },
        [](const Config& config) { return config.controller.address; },
    },
    KeySpec{
        {"metrics.address", "string", "",
         "HOST:PORT where loomctld serves Prometheus' text format on /metrics (jobs by state, "
         "queue waits, pass times, nodes, cores, memory and NVMe held, accounts, staging, "
         "agents' heartbeats: docs/admin-guide.md lists them), over plain HTTP: bind it to an "
         "address only the monitoring network reaches. Port 0 picks a free one, which the log "
         "names. Empty: not served."},
        [](Config& config, const toml::node& value) -> Status {
          std::string address = LOOM_TRY(as_string(value));
          if (!address.empty() && address.rfind(':') == std::string::npos)
            return make_error(ErrorCode::kInvalidArgument,
                              fmt::format("must be HOST:PORT, got \"{}\"", address));
          config.metrics.address = std::move(address);
          return {};
        },
        [](const Config& config) { return config.metrics.address; },
    },
    duration_key<&Config::controller, &Config::Controller::kill_grace>(
        {"controller.kill_grace", "duration", "0:30",
         "Between SIGTERM and SIGKILL when a job is cancelled or passes its walltime, as "
         "Slurm's KillWait: time for a job to write a checkpoint and exit on its own."}),
    duration_key<&Config::controller, &Config::Controller::connect_timeout>(
        {"controller.connect_timeout", "duration", "0:30",
         "How long the CLI keeps trying to reach loomctld (a controller restarting) before it "
         "gives up with one line. A controller that listens but fails the handshake (no "
         "tls.ca, or another CA's) is reported at once."}),
    duration_key<&Config::controller, &Config::Controller::heartbeat_interval, 1>(
        {"controller.heartbeat_interval", "duration", "0:01",
         "How often agents send a heartbeat to loomctld, and loomctld answers each: either "
         "side hears whether the other is there."}),
    KeySpec{
        {"controller.heartbeat_misses", "integer", "30",
         "Heartbeats an agent may miss before its node is DOWN and its jobs unreachable: "
         "nothing new is placed there, and its jobs are not final yet (see "
         "controller.requeue_after). A restarted loomctld schedules nothing for this long "
         "while agents re-register."},
        [](Config& config, const toml::node& value) -> Status {
          const auto misses = value.value<std::int64_t>();
          if (!misses || !value.is_integer() || *misses < 1 || *misses > 1000) {
            return make_error(ErrorCode::kInvalidArgument, "must be an integer from 1 to 1000");
          }
          config.controller.heartbeat_misses = static_cast<int>(*misses);
          return {};
        },
        [](const Config& config) { return std::to_string(config.controller.heartbeat_misses); },
    },
    duration_key<&Config::controller, &Config::Controller::requeue_after>(
        {"controller.requeue_after", "duration", "5:00",
         "How long a node may stay unreachable before loomctld gives its jobs up: they end "
         "NODE_FAIL, or go back to the queue with --requeue. Must exceed agent.fence_after "
         "by three heartbeat intervals, so that a --requeue job cut off from the controller "
         "is killed by its agent before it can run elsewhere."}),
    KeySpec{
        {"controller.agent_queue", "size", "64 MiB",
         "What the controller holds for one agent that does not read its stream (hung, or "
         "behind a saturated link): messages wait for that agent's own writer, and past this "
         "the agent is dropped, its node DOWN until it registers again. No other agent, RPC "
         "or scheduling pass waits for it."},
        [](Config& config, const toml::node& value) -> Status {
          const std::string text = LOOM_TRY(as_string(value));
          auto bytes = parse_bytes(text);
          if (!bytes) return std::unexpected(bytes.error());
          if (bytes->count() < (1u << 20))
            return make_error(ErrorCode::kInvalidArgument, "must be at least 1MiB");
          config.controller.agent_queue = bytes->count();
          return {};
        },
        [](const Config& config) { return format_bytes(Bytes(config.controller.agent_queue)); },
    },
    duration_key<&Config::controller, &Config::Controller::min_job_age>(
        {"controller.min_job_age", "duration", "5:00",
         "How long an ended job stays in loomctld's memory, as Slurm's MinJobAge: `loom queue "
         "--all` lists it until then. The state keeps every job: `loom show ID` finds it "
         "later, and a restart loads only the jobs ended this recently."}),
    duration_key<&Config::agent, &Config::Agent::fence_after>(
        {"agent.fence_after", "duration", "2:00",
         "How long an agent may hear nothing from the controller before it kills its "
         "--requeue jobs, which the controller will start again elsewhere (a network split); "
         "other jobs run on, and are reconciled when the controller is back. At least the "
         "heartbeat window (controller.heartbeat_interval x controller.heartbeat_misses), so "
         "that a controller restart costs no job."}),
    KeySpec{
        {"agent.state_dir", "string", "/var/lib/loom/agent",
         "Where loomd records the jobs it runs, so that after a restart it finds them again. "
         "loomd's --state-dir overrides it."},
        [](Config& config, const toml::node& value) -> Status {
          std::string dir = LOOM_TRY(as_string(value));
          if (dir.empty()) return make_error(ErrorCode::kInvalidArgument, "must name a directory");
          config.agent.state_dir = std::move(dir);
          return {};
        },
        [](const Config& config) { return config.agent.state_dir; },
    },
    KeySpec{
        {"agent.shm_dir", "string", "/dev/shm/loom",
         "A directory on a tmpfs where each MPI job gets DIR/job_ID on each of its nodes (the "
         "user's, 0700) for Open MPI's session directory and shared-memory segments; removed "
         "when the job ends there, even when it was killed. The same on every node (mpirun "
         "passes it to its daemons). loomd's --shm-dir overrides it."},
        [](Config& config, const toml::node& value) -> Status {
          config.agent.shm_dir = LOOM_TRY(as_string(value));
          if (!config.agent.shm_dir.starts_with('/'))
            return make_error(ErrorCode::kInvalidArgument, "must be an absolute path");
          return {};
        },
        [](const Config& config) { return config.agent.shm_dir; },
    },
    KeySpec{
        {"agent.nvme", "array of tables", "[]",
         "The NVMe devices loomd offers for burst-buffer slices, one [[agent.nvme]] table each: "
         "path (a directory on the device, where slice images go), capacity (a size) and "
         "numa (the NUMA node it is local to, optional)."},
        [](Config& config, const toml::node& value) -> Status {
          const toml::array* devices = value.as_array();
          if (devices == nullptr) {
            return make_error(
                ErrorCode::kInvalidArgument,
                fmt::format("must be [[agent.nvme]] tables, got {}", type_name(value)));
          }
          std::vector<Config::NvmeDevice> out;
          for (std::size_t i = 0; i < devices->size(); ++i) {
            const toml::table* t = (*devices)[i].as_table();
            auto bad = [&](std::string_view what) {
              return make_error(ErrorCode::kInvalidArgument, fmt::format("[{}]: {}", i, what));
            };
            if (t == nullptr) return bad("must be a table with path, capacity and numa");
            Config::NvmeDevice device;
            for (const auto& [key, field] : *t) {
              if (key == "path") {
                device.path = LOOM_TRY(as_string(field));
              } else if (key == "capacity") {
                const std::string text = LOOM_TRY(as_string(field));
                auto bytes = parse_bytes(text);
                if (!bytes) return bad(fmt::format("capacity: {}", bytes.error().message()));
                device.capacity = bytes->count();
              } else if (key == "numa") {
                const auto numa = field.value<std::int64_t>();
                if (!numa || !field.is_integer() || *numa < 0)
                  return bad("numa must be a NUMA node's number");
                device.numa = static_cast<unsigned>(*numa);
              } else {
                return bad(fmt::format("unknown key '{}' (path, capacity, numa)", key.str()));
              }
            }
            if (device.path.empty() || device.capacity == 0)
              return bad("needs a path and a capacity");
            out.push_back(std::move(device));
          }
          config.agent.nvme = std::move(out);
          return {};
        },
        [](const Config& config) {
          std::string out = "[";
          for (const Config::NvmeDevice& d : config.agent.nvme) {
            out += fmt::format(R"({}{{ path = "{}", capacity = "{}"{} }})",
                               out.size() > 1 ? ", " : "", d.path, format_bytes(Bytes(d.capacity)),
                               d.numa ? fmt::format(", numa = {}", *d.numa) : "");
          }
          return out + "]";
        },
    },
    KeySpec{
        {"agent.allow_root_jobs", "boolean", "false",
         "Whether loomd runs jobs submitted by root. Off, a job as root fails to start with "
         "a reason that says so."},
        [](Config& config, const toml::node& value) -> Status {
          config.agent.allow_root_jobs = LOOM_TRY(as_bool(value));
          return {};
        },
        [](const Config& config) -> std::string {
          return config.agent.allow_root_jobs ? "true" : "false";
        },
    },
    KeySpec{
        {"agent.cgroup", "string", "auto",
         "Which cgroups loomd confines jobs with: \"v2\" (one tree, as stock Debian 12, RHEL 9 "
         "and Ubuntu 22.04 nodes mount it alone), \"v1\" (a hierarchy per controller) or "
         "\"auto\": v2 where the node's v2 tree has the memory controller, else v1. loomd "
         "logs what it chose and which limits it cannot enforce; loom nodes shows both."},
        [](Config& config, const toml::node& value) -> Status {
          std::string choice = LOOM_TRY(as_string(value));
          if (choice != "auto" && choice != "v1" && choice != "v2")
            return make_error(ErrorCode::kInvalidArgument, R"(must be "auto", "v1" or "v2")");
          config.agent.cgroup = std::move(choice);
          return {};
        },
        [](const Config& config) { return config.agent.cgroup; },
    },
    KeySpec{
        {"agent.pids_max", "integer", "0",
         "The most processes and threads one task (a rank, or an MPI job's processes on a "
         "node) may have at once, by the pids controller; a fork past it fails. 0: no limit."},
        [](Config& config, const toml::node& value) -> Status {
          const auto pids = value.value<std::int64_t>();
          if (!pids || !value.is_integer() || *pids < 0 || *pids > 4'194'304)
            return make_error(ErrorCode::kInvalidArgument, "must be an integer from 0 to 4194304");
          config.agent.pids_max = static_cast<std::uint64_t>(*pids);
          return {};
        },
        [](const Config& config) { return std::to_string(config.agent.pids_max); },
    },
    KeySpec{
        {"agent.swap", "size", "0",
         "Swap a task may use beyond its --mem-per-task before the kernel's OOM killer ends it "
         "(memory.swap.max on cgroup v2, memory.memsw.limit_in_bytes on v1, where the kernel "
         "accounts swap). 0: a task over its memory is killed, not swapped out."},
        [](Config& config, const toml::node& value) -> Status {
          const std::string text = LOOM_TRY(as_string(value));
          auto bytes = parse_bytes(text);
          if (!bytes) return std::unexpected(bytes.error());
          config.agent.swap = bytes->count();
          return {};
        },
        [](const Config& config) -> std::string {
          return config.agent.swap == 0 ? "0" : format_bytes(Bytes(config.agent.swap));
        },
    },
    duration_key<&Config::staging, &Config::Staging::stall_timeout, 1>(
        {"staging.stall_timeout", "duration", "1:00",
         "How long a staging copy may go without an answer from the storage agent (a call, a "
         "transfer) before it fails, naming the file: a storage agent stopped or a link gone "
         "costs the job this long, not its whole walltime. Reading an HDF5 file's structure "
         "is given two minutes more."}),
    KeySpec{
        {"fabric.provider", "string", "",
         "libfabric provider for the data plane, e.g. \"verbs;ofi_rxm\", \"tcp;ofi_rxm\" or "
         "\"shm\". Empty: FI_PROVIDER if set, else verbs;ofi_rxm, then tcp;ofi_rxm. shm reaches "
         "only the same node, "
         "and a killed shm peer can stall the others (fabric/README.md)."},
        [](Config& config, const toml::node& value) -> Status {
          config.fabric.provider = LOOM_TRY(as_string(value));
          return {};
        },
        [](const Config& config) { return config.fabric.provider; },
    },
    KeySpec{
        {"fabric.interface", "string", "",
         "The fabric interface (libfabric's domain: a NIC such as \"mlx5_0\" or \"eth0\") "
         "whose address the data plane binds. Empty: the provider's first that is not loopback, an "
         "IPv4 address before an IPv6 one, and a link-local IPv6 address (a veth's, a bridge's) "
         "only when nothing else is offered. "
         "Set it inside network namespaces, where loopback publishes an address no peer reaches."},
        [](Config& config, const toml::node& value) -> Status {
          config.fabric.interface = LOOM_TRY(as_string(value));
          return {};
        },
        [](const Config& config) { return config.fabric.interface; },
    },
    path_key<&Config::tls, &Config::Tls::ca>(
        {"tls.ca", "string", "",
         "The cluster's certificate authority (PEM). Set, every gRPC channel runs over TLS: "
         "the CLI and the agents check that the controller and the storage agents hold a "
         "certificate it signed, and the controller and the storage agents take an agent's or a "
         "stager's calls only from a host that holds one. Empty: gRPC runs plain, and the "
         "daemons log that anybody on the network reads and changes what it carries. "
         "LOOM_TLS_CA overrides it."}),
    path_key<&Config::tls, &Config::Tls::cert>(
        {"tls.cert", "string", "",
         "This host's certificate (PEM), signed by tls.ca, with the host's names and addresses "
         "as subject alternative names: what loomctld and loomd present. The CLI needs none. "
         "LOOM_TLS_CERT overrides it."}),
    path_key<&Config::tls, &Config::Tls::key>(
        {"tls.key", "string", "",
         "The private key of tls.cert (PEM), which only its owner may read (mode 0600 or "
         "stricter, as ssh insists). LOOM_TLS_KEY overrides it."}),
};

// Every key, in the documentation's order.
const std::vector<const KeySpec*>& all_keys() {
  static const std::vector<const KeySpec*> kAll = [] {
    std::vector<const KeySpec*> out;
    for (std::span<const KeySpec> group :
         {std::span<const KeySpec>(kKeys), scheduler_keys(), account_keys()}) {
      for (const KeySpec& spec : group) out.push_back(&spec);
    }
    return out;
  }();
  return kAll;
}

const KeySpec* find_key(std::string_view name) {
  for (const KeySpec* spec : all_keys()) {
    if (spec->doc.name == name) return spec;
  }
  return nullptr;
}

bool is_section(std::string_view name) {
  for (const KeySpec* spec : all_keys()) {
    if (spec->doc.name.size() > name.size() && spec->doc.name.starts_with(name) &&
        spec->doc.name[name.size()] == '.') {
      return true;
    }
  }
  return false;
}

Status apply_table(Config& config, const toml::table& table, const std::string& prefix,
                   std::string_view source) {
  for (const auto& [key, node] : table) {
    const std::string name =
        prefix.empty() ? std::string(key.str()) : fmt::format("{}.{}", prefix, key.str());
    const auto line = node.source().begin.line;
    const auto where = fmt::format("{}:{}", source, line);
    if (const KeySpec* spec = find_key(name)) {
      Status set = spec->set(config, node);
      if (!set) {
        return make_error(set.error().code(),
                          fmt::format("{}: key '{}' {}", where, name, set.error().message()));
      }
    } else if (is_section(name)) {
      const toml::table* section = node.as_table();
      if (section == nullptr) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}: '{}' must be a table ([{}]), got {}", where, name, name,
                                      type_name(node)));
      }
      LOOM_TRY(apply_table(config, *section, name, source));
    } else if (node.is_table()) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("{}: unknown section [{}] (`loom config --keys` lists them)", where, name));
    } else {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("{}: unknown key '{}' (`loom config --keys` lists them)", where, name));
    }
  }
  return {};
}

// The deadlines that keep a job from running twice across a network split, checked
// against each other: the agent fences its --requeue jobs before the controller can start
// them elsewhere. The controller last heard the agent up to one interval before the split
// began, the agent looks at its deadline once an interval, and its kill takes a moment:
// three intervals between the two deadlines. Both sides read the same file.
Status check_deadlines(const Config& config, std::string_view source) {
  const Config::Controller& c = config.controller;
  if (config.agent.fence_after < c.heartbeat_window()) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: agent.fence_after ({}) must be at least the heartbeat window, "
                    "controller.heartbeat_interval x controller.heartbeat_misses ({}): a "
                    "controller restart would kill --requeue jobs",
                    source, format_duration(config.agent.fence_after),
                    format_duration(c.heartbeat_window())));
  }
  const std::chrono::seconds least = config.agent.fence_after + 3 * c.heartbeat_interval;
  if (c.requeue_after < least) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: controller.requeue_after ({}) must be at least agent.fence_after + 3 x "
                    "controller.heartbeat_interval ({}): a --requeue job cut off from the "
                    "controller could run again elsewhere before its agent kills it",
                    source, format_duration(c.requeue_after), format_duration(least)));
  }
  return {};
}

}  // namespace

std::span<const ConfigKey> config_keys() {
  static const auto kDocs = [] {
    std::vector<ConfigKey> out;
    for (const KeySpec* spec : all_keys()) out.push_back(spec->doc);
    return out;
  }();
  return kDocs;
}

std::string config_value(const Config& config, std::string_view key) {
  const KeySpec* spec = find_key(key);
  LOOM_CHECK(spec != nullptr, fmt::format("config_value asked for unknown key '{}'", key));
  return spec->get(config);
}

Result<Config> parse_config(std::string_view text, std::string_view source) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{}:{}: {}", source, e.source().begin.line, e.description()));
  }
  Config config;
  LOOM_TRY(apply_table(config, table, "", source));
  LOOM_TRY(check_deadlines(config, source));
  return config;
}

}  // namespace loom
