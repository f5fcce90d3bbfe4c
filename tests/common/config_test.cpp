#include "loom/common/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "temp.hpp"

namespace loom {
namespace {

std::string error_of(std::string_view text) {
  auto config = parse_config(text, "loom.toml");
  EXPECT_FALSE(config.has_value()) << text;
  return config ? "" : config.error().message();
}

TEST(Config, EveryKeyHasItsDefaultWhenTheFileIsEmpty) {
  auto config = parse_config("", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  for (const ConfigKey& key : config_keys()) {
    EXPECT_EQ(config_value(*config, key.name), key.default_value) << key.name;
  }
}

TEST(Config, ReadsSetKeys) {
  auto config =
      parse_config("[log]\nlevel = \"debug\"\n[auth]\nadmin_group = \"hpcadm\"\n", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->auth.admin_group, "hpcadm");
}

TEST(Config, NvmeDevicesAreTablesWithPathCapacityAndNuma) {
  auto config = parse_config(R"([[agent.nvme]]
path = "/mnt/nvme0/loom"
capacity = "3.5T"
numa = 0
[[agent.nvme]]
path = "/mnt/nvme1/loom"
capacity = "512G"
)",
                             "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  ASSERT_EQ(config->agent.nvme.size(), 2u);
  EXPECT_EQ(config->agent.nvme[0], (Config::NvmeDevice{"/mnt/nvme0/loom", 3584ull << 30, 0}));
  EXPECT_EQ(config->agent.nvme[1],
            (Config::NvmeDevice{"/mnt/nvme1/loom", 512ull << 30, std::nullopt}));
  EXPECT_EQ(
      config_value(*config, "agent.nvme"),
      R"([{ path = "/mnt/nvme0/loom", capacity = "3.5 TiB", numa = 0 }, { path = "/mnt/nvme1/loom", capacity = "512 GiB" }])");
  EXPECT_EQ(error_of("[[agent.nvme]]\npath = \"/x\"\ncapacity = \"lots\"\n"),
            "loom.toml:1: key 'agent.nvme' [0]: capacity: invalid size \"lots\": expected a number "
            "such as 512M, 64G or 1.5TiB");
  EXPECT_EQ(error_of("[[agent.nvme]]\npath = \"/x\"\n"),
            "loom.toml:1: key 'agent.nvme' [0]: needs a path and a capacity");
  EXPECT_EQ(error_of("[[agent.nvme]]\npath = \"/x\"\ncapacity = \"1G\"\nspeed = 3\n"),
            "loom.toml:1: key 'agent.nvme' [0]: unknown key 'speed' (path, capacity, numa)");
}

// How jobs are confined: a value loomd cannot act on stops it at start, the key named.
TEST(Config, TheAgentsCgroupKeysAreCheckedWhereTheyAreRead) {
  auto config =
      parse_config("[agent]\ncgroup = \"v2\"\npids_max = 4096\nswap = \"1G\"\n", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->agent.cgroup, "v2");
  EXPECT_EQ(config->agent.pids_max, 4096u);
  EXPECT_EQ(config->agent.swap, 1ull << 30);
  EXPECT_EQ(error_of("[agent]\ncgroup = \"v3\"\n"),
            "loom.toml:2: key 'agent.cgroup' must be \"auto\", \"v1\" or \"v2\"");
  EXPECT_EQ(error_of("[agent]\npids_max = -1\n"),
            "loom.toml:2: key 'agent.pids_max' must be an integer from 0 to 4194304");
}

// A period of 0 would spin: the keys that are periods and deadlines take at least a second.
TEST(Config, DurationsThatMustPassAreAtLeastASecond) {
  EXPECT_EQ(error_of("[controller]\nheartbeat_interval = \"0:00\"\n"),
            "loom.toml:2: key 'controller.heartbeat_interval' must be at least 1 second");
  EXPECT_EQ(error_of("[staging]\nstall_timeout = \"0s\"\n"),
            "loom.toml:2: key 'staging.stall_timeout' must be at least 1 second");
  auto config = parse_config("[staging]\nstall_timeout = \"1s\"\n", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->staging.stall_timeout, std::chrono::seconds(1));
}

// The TLS files are absolute paths (the daemons' working directory is /); their contents
// are checked where they are read (loom/proto/tls.hpp).
TEST(Config, TlsKeysAreAbsolutePaths) {
  auto config = parse_config("[tls]\nca = \"/etc/loom/ca.pem\"\n", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->tls.ca, "/etc/loom/ca.pem");
  EXPECT_EQ(error_of("[tls]\nkey = \"host.key\"\n"),
            "loom.toml:2: key 'tls.key' must be an absolute path, got \"host.key\"");
}

TEST(Config, TheSchedulersPolicyIsOneItKnowsAndItsWeightsAreNumbers) {
  auto config = parse_config(
      "[scheduler]\norder = \"priority\"\nbackfill = \"conservative\"\nage_weight = 2.5\n"
      "max_age = \"1-00:00:00\"\nfair_share_weight = 0\n",
      "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->scheduler.order, "priority");
  EXPECT_EQ(config->scheduler.backfill, "conservative");
  EXPECT_EQ(config->scheduler.age_weight, 2.5);
  EXPECT_EQ(config->scheduler.max_age, std::chrono::hours(24));
  EXPECT_EQ(config->scheduler.fair_share_weight, 0);
  EXPECT_EQ(config_value(*config, "scheduler.age_weight"), "2.5");
  EXPECT_EQ(
      error_of("[scheduler]\norder = \"lottery\"\n"),
      "loom.toml:2: key 'scheduler.order' must be \"fcfs\", \"sjf\", \"srtf\", \"priority\" or "
      "\"fairshare\", got \"lottery\"");
  EXPECT_EQ(error_of("[scheduler]\n\nbackfill = \"fcfs\"\n"),
            "loom.toml:3: key 'scheduler.backfill' must be \"none\", \"easy\" or "
            "\"conservative\", got \"fcfs\"");
  EXPECT_EQ(error_of("[scheduler]\nsize_weight = -1\n"),
            "loom.toml:2: key 'scheduler.size_weight' must be a number from 0 to 1e9");
  EXPECT_EQ(error_of("[scheduler]\nuser_weight = \"1\"\n"),
            "loom.toml:2: key 'scheduler.user_weight' must be a number from 0 to 1e9");
}

// [[accounts]]: errors name the table, the key and the key's own line.
TEST(Config, AccountsHaveSharesUsersAndLimitsCheckedNamingKeyAndLine) {
  auto config = parse_config(R"([scheduler]
fair_share_half_life = "1:00"

[[accounts]]
name = "physics"
shares = 3
group = "physics"
max_nvme = "4TiB"
max_walltime = "2-00:00:00"

[[accounts]]
name = "chemistry"
users = ["alice", "bob"]
max_cores = 256
max_submitted_jobs = 5000
)",
                             "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->scheduler.fair_share_half_life, std::chrono::minutes(1));
  ASSERT_EQ(config->accounts.size(), 2u);
  const Config::Account& physics = config->accounts[0];
  EXPECT_EQ(physics.shares, 3u);
  EXPECT_EQ(physics.group, "physics");
  EXPECT_EQ(physics.limits.nvme, 4ull << 40);
  EXPECT_EQ(physics.limits.walltime, std::chrono::hours(48));
  EXPECT_FALSE(physics.limits.cores);
  const Config::Account& chemistry = config->accounts[1];
  EXPECT_EQ(chemistry.shares, 1u) << "an account's shares are 1 unless given";
  EXPECT_EQ(chemistry.users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(chemistry.limits.cores, 256u);
  EXPECT_EQ(chemistry.limits.submitted_jobs, 5000u);
  // Written back, it reads as the same accounts.
  auto again = parse_config("accounts = " + config_value(*config, "accounts"), "loom.toml");
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->accounts, config->accounts);

  EXPECT_EQ(error_of("[[accounts]]\nname = \"a\"\nshares = 0\n"),
            "loom.toml:1: key 'accounts' [0].shares (line 3): must be an integer of 1 or more");
  EXPECT_EQ(
      error_of("[[accounts]]\nname = \"a\"\n[[accounts]]\nname = \"b\"\nmax_nvme = \"lots\"\n"),
      "loom.toml:1: key 'accounts' [1].max_nvme (line 5): invalid size \"lots\": expected a "
      "number such as 512M, 64G or 1.5TiB");
  EXPECT_EQ(error_of("[[accounts]]\nname = \"a\"\n[[accounts]]\nname = \"a\"\n"),
            "loom.toml:1: key 'accounts' [1] (line 3): a second account named \"a\"");
  EXPECT_EQ(error_of("[[accounts]]\nshares = 2\n"),
            "loom.toml:1: key 'accounts' [0] (line 1): needs a name");
  EXPECT_EQ(error_of("[[accounts]]\nname = \"a\"\nusers = \"alice\"\n"),
            "loom.toml:1: key 'accounts' [0].users (line 3): must be an array of names");
  EXPECT_EQ(error_of("[[accounts]]\nname = \"a\"\nmax_jobs = 3\n"),
            "loom.toml:1: key 'accounts' [0].max_jobs (line 3): unknown key (name, shares, users, "
            "group, max_cores, max_memory, max_nvme, max_running_jobs, max_submitted_jobs, "
            "max_walltime)");
  EXPECT_EQ(error_of("[scheduler]\nfair_share_half_life = \"0\"\n"),
            "loom.toml:2: key 'scheduler.fair_share_half_life' must be at least 1 second");
}

// [[qos]]: a preemption that could go round for ever is refused, naming where.
TEST(Config, QosPreemptOnlyLowerQosAndNeverRoundACycle) {
  auto config = parse_config(R"([[qos]]
name = "debug"
priority = 100
users = ["loom-bob"]
preempt = ["normal", "low"]

[[qos]]
name = "low"
preempt_mode = "cancel"
)",
                             "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  ASSERT_EQ(config->qos.size(), 2u);
  EXPECT_EQ(config->qos[0].priority, 100u);
  EXPECT_EQ(config->qos[0].preempt, (std::vector<std::string>{"normal", "low"}));
  EXPECT_TRUE(config->qos[0].requeue);
  EXPECT_FALSE(config->qos[1].requeue);
  auto again = parse_config("qos = " + config_value(*config, "qos"), "loom.toml");
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->qos, config->qos);

  EXPECT_EQ(error_of("[[qos]]\nname = \"a\"\npreempt = [\"a\"]\n"),
            "loom.toml:1: key 'qos' [0].preempt (line 1): \"a\" would preempt itself");
  EXPECT_EQ(error_of("[[qos]]\nname = \"a\"\npreempt = [\"b\"]\n[[qos]]\nname = \"b\"\n"
                     "preempt = [\"a\"]\n"),
            "loom.toml:1: key 'qos' [0].preempt (line 1): \"a\" would preempt itself through "
            "the QOS it preempts");
  EXPECT_EQ(error_of("[[qos]]\nname = \"a\"\npreempt = [\"urgent\"]\n"),
            "loom.toml:1: key 'qos' [0].preempt (line 1): no QOS named \"urgent\"");
  EXPECT_EQ(error_of("[[qos]]\nname = \"a\"\npreempt_mode = \"suspend\"\n"),
            "loom.toml:1: key 'qos' [0].preempt_mode (line 3): must be \"requeue\" or \"cancel\"");
}

TEST(Config, DottedKeysWorkToo) {
  auto config = parse_config("log.level = \"error\"\n", "loom.toml");
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->log.level, "error");
}

TEST(Config, AnUnknownKeyIsNamedWithItsLine) {
  EXPECT_EQ(error_of("[log]\nlevel = \"info\"\nlevle = \"debug\"\n"),
            "loom.toml:3: unknown key 'log.levle' (`loom config --keys` lists them)");
  EXPECT_EQ(error_of("\n\n[schedular]\norder = \"sjf\"\n"),
            "loom.toml:3: unknown section [schedular] (`loom config --keys` lists them)");
  EXPECT_EQ(error_of("[log]\nlevel = \"info\"\n[log.file]\npath = \"/tmp/x\"\n"),
            "loom.toml:3: unknown section [log.file] (`loom config --keys` lists them)");
}

TEST(Config, AWrongTypeIsNamedWithItsLine) {
  EXPECT_EQ(error_of("[log]\n\nlevel = 3\n"),
            "loom.toml:3: key 'log.level' must be a string, got integer");
  EXPECT_EQ(error_of("log = \"debug\"\n"),
            "loom.toml:1: 'log' must be a table ([log]), got string");
}

TEST(Config, AnInvalidValueIsNamedWithItsLine) {
  EXPECT_EQ(error_of("[log]\nlevel = \"loud\"\n"),
            "loom.toml:2: key 'log.level' invalid log level \"loud\": expected trace, debug, "
            "info, warn, error, critical or off");
  EXPECT_EQ(error_of("[auth]\nadmin_group = \"\"\n"),
            "loom.toml:2: key 'auth.admin_group' must name a group, got \"\"");
}

TEST(Config, ATomlSyntaxErrorGivesItsLine) {
  std::string message = error_of("[log]\nlevel = \"info\n");
  EXPECT_EQ(message.rfind("loom.toml:2: ", 0), 0u) << message;
}

// The deadlines that keep a --requeue job from running on both sides of a network split
// are checked against each other, naming both keys.
TEST(Config, TheSplitDeadlinesAreCheckedAgainstEachOther) {
  EXPECT_EQ(error_of("[agent]\nfence_after = \"0:20\"\n"),
            "loom.toml: agent.fence_after (0:20) must be at least the heartbeat window, "
            "controller.heartbeat_interval x controller.heartbeat_misses (0:30): a controller "
            "restart would kill --requeue jobs");
  EXPECT_EQ(error_of("[agent]\nfence_after = \"5:00\"\n"),
            "loom.toml: controller.requeue_after (5:00) must be at least agent.fence_after + 3 x "
            "controller.heartbeat_interval (5:03): a --requeue job cut off from the controller "
            "could run again elsewhere before its agent kills it");
  auto short_windows = parse_config(
      "[controller]\nheartbeat_misses = 2\nrequeue_after = \"0:06\"\n"
      "[agent]\nfence_after = \"0:03\"\n",
      "loom.toml");
  ASSERT_TRUE(short_windows) << short_windows.error().to_string();
  EXPECT_EQ(short_windows->controller.requeue_after, std::chrono::seconds(6));
  EXPECT_EQ(short_windows->agent.fence_after, std::chrono::seconds(3));
}

TEST(Config, AMissingExplicitFileIsAnError) {
  auto config = load_config(std::filesystem::path("/nonexistent/loom.toml"));
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(config.error().message().find("/nonexistent/loom.toml"), std::string::npos);
}

TEST(Config, LoomConfigNamesTheFile) {
  const std::filesystem::path path = loom::testing::temp_path("loom.toml");
  std::ofstream(path) << "[auth]\nadmin_group = \"wheel\"\n";
  setenv("LOOM_CONFIG", path.c_str(), 1);
  auto config = load_config(std::nullopt);
  unsetenv("LOOM_CONFIG");
  std::filesystem::remove(path);
  ASSERT_TRUE(config.has_value()) << config.error().to_string();
  EXPECT_EQ(config->auth.admin_group, "wheel");
}

// docs/configuration.md is what a sysadmin reads: it must list every key with its default.
TEST(Config, TheDocumentationListsEveryKeyWithItsDefault) {
  std::ifstream in(LOOM_SOURCE_DIR "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  for (const ConfigKey& key : config_keys()) {
    const std::string row = std::string("| `") + std::string(key.name) + "` | " +
                            std::string(key.type) + " | `" + std::string(key.default_value) + "` |";
    EXPECT_NE(text.str().find(row), std::string::npos) << "docs/configuration.md lacks: " << row;
  }
}

// packaging/loom.toml, installed as /etc/loom/loom.toml, is what a sysadmin starts from:
// every key at its default, commented out. As installed it is the defaults; with every
// key's line uncommented it is still the defaults, so each line shows the default truly.
TEST(Config, TheInstalledFileShowsEveryKeyAtItsDefault) {
  std::ifstream in(LOOM_SOURCE_DIR "/packaging/loom.toml");
  ASSERT_TRUE(in) << "packaging/loom.toml is missing";
  std::stringstream text;
  text << in.rdbuf();
  std::set<std::string> names;
  for (const ConfigKey& key : config_keys()) names.insert(std::string(key.name));
  std::string section, uncommented;
  std::set<std::string> shown;
  std::istringstream lines(text.str());
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("[")) section = line.substr(1, line.find(']') - 1);
    const std::size_t eq = line.find(" = ");
    if (line.starts_with("# ") && eq != std::string::npos &&
        names.contains(section + "." + line.substr(2, eq - 2))) {
      shown.insert(section + "." + line.substr(2, eq - 2));
      line = line.substr(2);
    }
    uncommented += line + "\n";
  }
  Config defaults;
  for (const std::string& file : {text.str(), uncommented}) {
    auto parsed = parse_config(file, "loom.toml");
    ASSERT_TRUE(parsed.has_value()) << parsed.error().to_string() << "\n" << file;
    for (const ConfigKey& key : config_keys()) {
      EXPECT_EQ(config_value(*parsed, key.name), config_value(defaults, key.name)) << key.name;
    }
  }
  names.erase("agent.nvme");  // example tables, not defaults: there are none
  names.erase("accounts");
  names.erase("qos");
  EXPECT_EQ(shown, names) << "keys without their line in packaging/loom.toml";
}

}  // namespace
}  // namespace loom
