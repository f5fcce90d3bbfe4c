// Loom's configuration: one TOML file, every key documented with its default.
//
// The file is /etc/loom/loom.toml unless LOOM_CONFIG or a --config option names another.
// Unknown keys and values of the wrong type are errors that name the key and its line, so
// that a typo never silently leaves a default in force.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom {

struct Config {
  struct Log {
    std::string level = "info";
  } log;
  struct Auth {
    std::string admin_group = "loomadm";
  } auth;
  struct Controller {
    std::string address = "127.0.0.1:6820";
    std::chrono::seconds kill_grace{30};
    std::chrono::seconds connect_timeout{30};
    std::chrono::seconds heartbeat_interval{1};
    int heartbeat_misses = 30;
    // A node unreachable this long has its jobs given up (NODE_FAIL, or requeued).
    std::chrono::seconds requeue_after{300};
    // How long an agent may be silent before its node is DOWN.
    std::chrono::seconds heartbeat_window() const { return heartbeat_interval * heartbeat_misses; }
    std::uint64_t agent_queue = 64ull << 20;  // bytes held for an agent that does not read
    // Ended jobs leave the controller's memory this long after their end (the store keeps
    // them).
    std::chrono::seconds min_job_age{300};
  } controller;
  // An NVMe device an agent offers for burst-buffer slices.
  struct NvmeDevice {
    std::string path;              // where slices' images go: a directory on the device
    std::uint64_t capacity = 0;    // bytes offered
    std::optional<unsigned> numa;  // the NUMA node it is local to
    friend bool operator==(const NvmeDevice&, const NvmeDevice&) = default;
  };
  struct Agent {
    std::string state_dir = "/var/lib/loom/agent";
    std::string shm_dir = "/dev/shm/loom";
    bool allow_root_jobs = false;
    std::string cgroup = "auto";  // "auto", "v1" or "v2"
    // With no word from the controller this long, --requeue jobs are killed (fenced).
    std::chrono::seconds fence_after{120};
    std::uint64_t pids_max = 0;  // per task; 0: no limit
    std::uint64_t swap = 0;      // bytes of swap a task may use beyond --mem-per-task
    std::vector<NvmeDevice> nvme;
  } agent;
  struct Staging {
    std::chrono::seconds stall_timeout{60};  // no progress this long: the copy fails
  } staging;
  struct Fabric {
    std::string provider;   // empty: FI_PROVIDER, else the fallback order
    std::string interface;  // empty: the provider's first non-loopback domain
  } fabric;
  // How loomctld orders its queue and lets jobs pass a blocked one (loom/sched/configured.hpp);
  // loom sim --config replays a trace the same way.
  struct Scheduler {
    std::string order = "fcfs";        // fcfs, sjf, srtf, priority or fairshare
    std::string backfill = "easy";     // none, easy or conservative
    std::uint64_t backfill_depth = 0;  // conservative: blocked jobs planned per pass; 0: all
    // priority's factors, as Slurm's PriorityWeight*: sched::MultifactorWeights.
    double age_weight = 1000;
    std::chrono::seconds max_age{std::chrono::hours(24 * 7)};
    double size_weight = 1000;
    double fair_share_weight = 10000;
    double user_weight = 1;
    // How fast an account's past use fades from its fair share, as Slurm's
    // PriorityDecayHalfLife.
    std::chrono::seconds fair_share_half_life{std::chrono::hours(24 * 7)};
  } scheduler;
  // What one account's jobs may hold at once, and ask for; unset: no limit.
  struct AccountLimits {
    std::optional<std::uint64_t> cores;   // running jobs' cores
    std::optional<std::uint64_t> memory;  // running jobs' memory, bytes
    std::optional<std::uint64_t> nvme;    // running jobs' burst-buffer slices, bytes
    std::optional<std::uint64_t> running_jobs;
    std::optional<std::uint64_t> submitted_jobs;   // pending and running
    std::optional<std::chrono::seconds> walltime;  // one job's longest
    friend bool operator==(const AccountLimits&, const AccountLimits&) = default;
  };
  // Whom jobs are charged to (-A), and its part of the cluster: [[accounts]] tables. With
  // none, -A is a free label charged to nothing.
  struct Account {
    std::string name;
    std::uint64_t shares = 1;        // its fair share, relative to the other accounts'
    std::vector<std::string> users;  // who may charge it; the first listing a user is their default
    std::string group;               // and the members of this Unix group
    AccountLimits limits;
    friend bool operator==(const Account&, const Account&) = default;
  };
  std::vector<Account> accounts;
  // Quality of service: [[qos]] tables. A job's is --qos, else "normal" (priority 0, which
  // a [[qos]] table may redefine).
  struct Qos {
    std::string name;
    std::uint64_t priority = 0;      // higher: its jobs go first, whatever the order
    std::vector<std::string> users;  // who may use it; with group, empty: everybody
    std::string group;
    std::vector<std::string> preempt;  // the QOS whose running jobs it may preempt
    bool requeue = true;               // preempt_mode: requeue, or cancel
    friend bool operator==(const Qos&, const Qos&) = default;
  };
  std::vector<Qos> qos;
  struct Mpi {
    std::string launch = "mpirun";  // mpi.default: "pmix" or "mpirun"
  } mpi;
  struct Metrics {
    std::string address;  // HOST:PORT where loomctld serves /metrics; empty: it does not
  } metrics;
  // PEM files (loom/proto/tls.hpp); no CA: gRPC runs plain.
  struct Tls {
    std::string ca;    // the cluster's CA: every program
    std::string cert;  // this host's certificate and key: the daemons
    std::string key;
  } tls;
};

// One key of the file, as `loom config` and docs/configuration.md describe it.
struct ConfigKey {
  std::string_view name;           // dotted: "log.level"
  std::string_view type;           // "string", "boolean", "integer", "size", "duration"
  std::string_view default_value;  // as written in the file
  std::string_view description;
};

// Every key the file may hold, in the order the documentation lists them.
std::span<const ConfigKey> config_keys();

// The value of a key in config, as it would be written in the file.
std::string config_value(const Config& config, std::string_view key);

// Parses TOML text; source names it in errors ("/etc/loom/loom.toml:12: ...").
Result<Config> parse_config(std::string_view text, std::string_view source);

// --config's help, for every program.
inline constexpr const char* kConfigHelp =
    "Configuration file (default: $LOOM_CONFIG, else /etc/loom/loom.toml)";

// The file to read: explicit when given, else $LOOM_CONFIG, else /etc/loom/loom.toml.
std::filesystem::path config_path(const std::optional<std::filesystem::path>& explicit_path);

// Reads the configuration. A file named explicitly or by LOOM_CONFIG must exist; the
// default file may be absent, and then every key has its default. LOOM_TLS_CA,
// LOOM_TLS_CERT and LOOM_TLS_KEY, where set, override tls.ca, tls.cert and tls.key (loom up
// hands its daemons and its users the files it made that way).
Result<Config> load_config(const std::optional<std::filesystem::path>& explicit_path);

// What every Loom program does first: reads the configuration and sends its log to stderr
// at log.level (or LOOM_LOG), tagged with the program's name.
Result<Config> start_program(std::string_view program,
                             const std::optional<std::filesystem::path>& explicit_path);

}  // namespace loom
