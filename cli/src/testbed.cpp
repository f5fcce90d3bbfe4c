#include "testbed.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <set>
#include <utility>

#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/unique_fd.hpp"
#include "run_command.hpp"

extern char** environ;

namespace loom::cli {

namespace {

namespace fs = std::filesystem;

constexpr unsigned kSlots = 16;
constexpr unsigned kHostsPerSlot = 13;  // .1 is the head; .2 to .14 the hosts

std::string bridge(unsigned slot) { return fmt::format("loom-br{}", slot); }
fs::path owner_file(unsigned slot) { return fmt::format("/run/loom-testbed-{}.pid", slot); }

// A testbed whose owner is gone: its namespaces, bridge and files.
void remove_slot(unsigned slot) {
  const std::string prefix = fmt::format("loom{}-", slot);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    if (entry.path().filename().string().starts_with(prefix))
      (void)run_command({"ip", "netns", "delete", entry.path().filename().string()});
  }
  for (const auto& entry : fs::directory_iterator("/etc/netns", ec)) {
    if (entry.path().filename().string().starts_with(prefix)) fs::remove_all(entry.path(), ec);
  }
  (void)run_command({"ip", "link", "delete", bridge(slot)});
  fs::remove(owner_file(slot), ec);
}

bool owner_alive(unsigned slot) {
  std::ifstream in(owner_file(slot));
  pid_t pid = 0;
  return in >> pid && pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

}  // namespace

Testbed::Testbed(unsigned slot, std::vector<std::string> hosts)
    : slot_(slot),
      run_(::getpid()),
      hosts_(std::move(hosts)),
      head_(fmt::format("198.18.0.{}", slot * 16 + 1)),
      owner_(true) {}

Testbed::Testbed(Testbed&& other) noexcept
    : slot_(other.slot_),
      run_(other.run_),
      hosts_(std::move(other.hosts_)),
      head_(std::move(other.head_)),
      owner_(std::exchange(other.owner_, false)) {}

Testbed::~Testbed() {
  if (owner_) tear_down();
}

std::string Testbed::namespace_of(const std::string& host) const {
  return namespace_prefix() + host;
}

std::string Testbed::namespace_prefix() const { return fmt::format("loom{}-{}-", slot_, run_); }

std::string Testbed::network() const { return fmt::format("198.18.0.{}/28", slot_ * 16); }

std::string Testbed::address(const std::string& host) const {
  const auto at = std::ranges::find(hosts_, host);
  return fmt::format("198.18.0.{}", slot_ * 16 + 2 + static_cast<unsigned>(at - hosts_.begin()));
}

Result<Testbed> Testbed::make(const std::vector<std::string>& hosts) {
  if (::geteuid() != 0)
    return make_error(ErrorCode::kPermissionDenied,
                      "--netns needs root: it makes network namespaces");
  if (hosts.empty() || hosts.size() > kHostsPerSlot) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--netns: between 1 and {} hosts", kHostsPerSlot));
  }
  if (std::set<std::string>(hosts.begin(), hosts.end()).size() != hosts.size()) {
    return make_error(ErrorCode::kInvalidArgument, "--netns: host names must differ");
  }
  if (!fs::exists("/proc/self/ns/net"))
    return make_error(ErrorCode::kUnimplemented, "--netns: this kernel has no network namespaces");
  // Claims are made one at a time, so that a run never takes another's half-made testbed
  // for one whose owner died.
  const UniqueFd lock(::open("/run/loom-testbed.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0) {
    return make_error(
        ErrorCode::kInternal,
        fmt::format("--netns: cannot lock /run/loom-testbed.lock: {}", loom::errno_text(errno)));
  }
  std::string last_error;
  for (unsigned slot = 0; slot < kSlots; ++slot) {
    Status claimed = run_command({"ip", "link", "add", bridge(slot), "type", "bridge"});
    if (!claimed && fs::exists(fs::path("/sys/class/net") / bridge(slot)) && !owner_alive(slot)) {
      remove_slot(slot);  // left by a run that was killed
      claimed = run_command({"ip", "link", "add", bridge(slot), "type", "bridge"});
    }
    if (!claimed) {
      last_error = claimed.error().message();
      continue;
    }
    std::ofstream(owner_file(slot)) << ::getpid() << "\n";
    Testbed testbed(slot, hosts);  // from here its destructor removes whatever was made
    const std::string br = bridge(slot);
    LOOM_TRY(run_command({"ip", "addr", "add", testbed.head_ + "/28", "dev", br}));
    LOOM_TRY(run_command({"ip", "link", "set", br, "up"}));
    std::string hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + testbed.head_ + " head\n";
    for (const std::string& host : hosts) hosts_file += testbed.address(host) + " " + host + "\n";
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      const std::string ns = testbed.namespace_of(hosts[i]);
      // The run's id in the name: a veth whose namespace is still held (a socket of a
      // killed process lingering there) outlives its run, and must not block the next.
      const std::string veth = fmt::format("lm{}-{}-{}", slot, testbed.run_, i);
      LOOM_TRY(run_command({"ip", "netns", "add", ns}));
      LOOM_TRY(run_command(
          {"ip", "link", "add", veth, "type", "veth", "peer", "name", kInterface, "netns", ns}));
      LOOM_TRY(run_command({"ip", "link", "set", veth, "master", br, "up"}));
      LOOM_TRY(run_command(
          {"ip", "-n", ns, "addr", "add", testbed.address(hosts[i]) + "/28", "dev", kInterface}));
      LOOM_TRY(run_command({"ip", "-n", ns, "link", "set", kInterface, "up"}));
      LOOM_TRY(run_command({"ip", "-n", ns, "link", "set", "lo", "up"}));
      fs::create_directories(fs::path("/etc/netns") / ns);
      std::ofstream(fs::path("/etc/netns") / ns / "hosts") << hosts_file;
    }
    return testbed;
  }
  return make_error(
      ErrorCode::kResourceExhausted,
      fmt::format("--netns: all {} testbeds of 198.18.0.0/24 are in use ({})", kSlots, last_error));
}

std::vector<std::string> Testbed::on(const std::string& host,
                                     const std::vector<std::string>& argv) const {
  const std::string ns = namespace_of(host);
  // nsenter and unshare exec in place: the daemon keeps the pid its supervisor started.
  // /etc/hosts is bound in a mount namespace of its own (as `ip netns exec` does, but
  // keeping /sys, and so the cgroup tree, as it is), and /dev/shm is a tmpfs of the host's
  // own, as each node has (gone with the last process in that namespace).
  const std::string enter =
      R"(mount --bind "$0" /etc/hosts && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm && )"
      R"(hostname "$1" && shift && exec "$@")";
  std::vector<std::string> out{"/usr/bin/nsenter",
                               "--net=/run/netns/" + ns,
                               "--",
                               "unshare",
                               "--uts",
                               "--mount",
                               "--propagation",
                               "slave",
                               "--",
                               "sh",
                               "-c",
                               enter,
                               (fs::path("/etc/netns") / ns / "hosts").string(),
                               host};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void Testbed::tear_down() {
  for (const std::string& host : hosts_)
    (void)run_command({"ip", "netns", "delete", namespace_of(host)});
  std::error_code ec;
  for (const std::string& host : hosts_)
    fs::remove_all(fs::path("/etc/netns") / namespace_of(host), ec);
  (void)run_command({"ip", "link", "delete", bridge(slot_)});
  fs::remove(owner_file(slot_), ec);
}

}  // namespace loom::cli
