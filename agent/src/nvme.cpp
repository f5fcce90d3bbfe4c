#include "loom/agent/nvme.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <charconv>
#include <filesystem>

#include "loom/common/bytes.hpp"

namespace loom::agent {

Result<Config::NvmeDevice> parse_nvme(std::string_view text) {
  const std::size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0)
    return make_error(ErrorCode::kInvalidArgument, "expected PATH=SIZE[:NUMA]");
  const std::size_t colon = text.find(':', eq);
  const Bytes bytes = LOOM_TRY(parse_bytes(
      std::string(text.substr(eq + 1, colon == std::string_view::npos ? colon : colon - eq - 1))));
  Config::NvmeDevice device{std::string(text.substr(0, eq)), bytes.count(), std::nullopt};
  if (colon != std::string_view::npos) {
    unsigned numa = 0;
    const char* end = text.data() + text.size();
    if (auto [at, ec] = std::from_chars(text.data() + colon + 1, end, numa);
        ec != std::errc() || at != end || colon + 1 == text.size()) {
      return make_error(ErrorCode::kInvalidArgument, "the NUMA node after ':' must be a number");
    }
    device.numa = numa;
  }
  return device;
}

void match_block_devices(std::vector<Config::NvmeDevice>& devices,
                         const hwtopo::Topology& topology) {
  for (Config::NvmeDevice& device : devices) {
    struct stat st {};
    if (device.numa || ::stat(device.path.c_str(), &st) != 0) continue;
    std::error_code ec;
    const std::string sysfs =
        std::filesystem::canonical(
            fmt::format("/sys/dev/block/{}:{}", major(st.st_dev), minor(st.st_dev)), ec)
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

}  // namespace loom::agent
