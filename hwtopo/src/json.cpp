#include "loom/hwtopo/json.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <set>

namespace loom::hwtopo {

using nlohmann::json;

namespace {

template <typename T>
json optional_json(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

std::vector<std::string> names_in(const auto& devices, unsigned numa) {
  std::vector<std::string> names;
  for (const auto& device : devices) {
    if (device.numa == numa) names.push_back(device.name);
  }
  return names;
}

// Reads fields with errors that name them by path, e.g. numa_domains[1].os_index.
class Reader {
 public:
  static std::unexpected<Error> fail(const std::string& path, std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("topology JSON: '{}' {}", path, why));
  }

  using Ref = std::reference_wrapper<const json>;

  static Result<Ref> field(const json& object, const std::string& path, std::string_view key) {
    const std::string where = path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
    if (!object.is_object()) return fail(path.empty() ? "(top level)" : path, "must be an object");
    auto it = object.find(key);
    if (it == object.end()) return fail(where, "is missing");
    return std::cref(*it);
  }

  static Result<std::uint64_t> u64(const json& value, const std::string& path) {
    const bool non_negative =
        value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0);
    if (!non_negative)
      return fail(path, fmt::format("must be an unsigned integer, got {}", value.dump()));
    return value.get<std::uint64_t>();
  }

  static Result<unsigned> index(const json& value, const std::string& path) {
    std::uint64_t n = LOOM_TRY(u64(value, path));
    if (n > std::numeric_limits<unsigned>::max()) return fail(path, "is out of range");
    return static_cast<unsigned>(n);
  }

  static Result<std::optional<unsigned>> optional_index(const json& value,
                                                        const std::string& path) {
    if (value.is_null()) return std::optional<unsigned>();
    const unsigned n = LOOM_TRY(index(value, path));
    return std::optional<unsigned>(n);
  }

  static Result<std::string> string(const json& value, const std::string& path) {
    if (!value.is_string())
      return fail(path, fmt::format("must be a string, got {}", value.dump()));
    return value.get<std::string>();
  }

  static Result<bool> boolean(const json& value, const std::string& path) {
    if (!value.is_boolean())
      return fail(path, fmt::format("must be true or false, got {}", value.dump()));
    return value.get<bool>();
  }

  static Result<Ref> array(const json& value, const std::string& path) {
    if (!value.is_array()) return fail(path, "must be an array");
    return std::cref(value);
  }

  // The member `key` of `object` (itself named `path`), read by `read`, e.g.
  //   member(domain, "numa_domains[0]", "os_index", index)
  template <typename Read>
  static auto member(const json& object, const std::string& path, std::string_view key, Read read)
      -> decltype(read(object, path)) {
    const json& value = LOOM_TRY(field(object, path, key));
    return read(value, path.empty() ? std::string(key) : fmt::format("{}.{}", path, key));
  }

  static Result<std::vector<unsigned>> indexes(const json& value, const std::string& path) {
    LOOM_TRY(array(value, path));
    std::vector<unsigned> out;
    for (std::size_t i = 0; i < value.size(); ++i) {
      const unsigned n = LOOM_TRY(index(value[i], fmt::format("{}[{}]", path, i)));
      out.push_back(n);
    }
    if (!std::ranges::is_sorted(out) || std::ranges::adjacent_find(out) != out.end()) {
      return fail(path, "must be ascending without repeats");
    }
    return out;
  }
};

// Fields derived from others are written for people and checked when read back, so that
// a JSON whose parts disagree is refused rather than half believed.
Status check_derived(const json& in, const Topology& t) {
  const std::uint64_t cores = LOOM_TRY(Reader::member(in, "", "cores", Reader::u64));
  const std::uint64_t pus = LOOM_TRY(Reader::member(in, "", "pus", Reader::u64));
  if (cores != t.cores.size()) {
    return Reader::fail("cores",
                        fmt::format("says {} but core_map lists {}", cores, t.cores.size()));
  }
  if (pus != t.pu_count()) {
    return Reader::fail("pus", fmt::format("says {} but core_map lists {}", pus, t.pu_count()));
  }
  for (std::size_t i = 0; i < t.numa_domains.size(); ++i) {
    const NumaDomain& d = t.numa_domains[i];
    const json& jd = in["numa_domains"][i];
    const std::string path = fmt::format("numa_domains[{}]", i);
    const std::vector<unsigned> listed = LOOM_TRY(Reader::member(jd, path, "pus", Reader::indexes));
    if (listed != d.pus) {
      return Reader::fail(path + ".pus", "differs from the PUs of the domain's cores in core_map");
    }
    for (auto [key, expected] :
         {std::pair{"block_devices", names_in(t.block_devices, d.os_index)},
          std::pair{"network_devices", names_in(t.network_devices, d.os_index)}}) {
      const json& names = LOOM_TRY(Reader::field(jd, path, key));
      if (names != json(expected)) {
        return Reader::fail(fmt::format("{}.{}", path, key),
                            "differs from the devices local to this domain in the top-level list");
      }
    }
  }
  return {};
}

}  // namespace

json to_json(const Topology& t) {
  json domains = json::array();
  for (const NumaDomain& d : t.numa_domains) {
    domains.push_back({
        {"os_index", d.os_index},
        {"memory_bytes", d.memory_bytes},
        {"package", optional_json(d.package)},
        {"kind", d.kind},
        {"memory_only", d.memory_only()},
        {"cores", d.cores},
        {"pus", d.pus},
        {"near", d.near},
        {"block_devices", names_in(t.block_devices, d.os_index)},
        {"network_devices", names_in(t.network_devices, d.os_index)},
    });
  }
  json core_map = json::array();
  for (const Core& c : t.cores) {
    core_map.push_back({{"core", c.logical_index}, {"package", c.package}, {"pus", c.pus}});
  }
  json blocks = json::array();
  for (const BlockDevice& b : t.block_devices) {
    blocks.push_back({{"name", b.name},
                      {"nvme", b.nvme},
                      {"numa", optional_json(b.numa)},
                      {"capacity_bytes", optional_json(b.capacity_bytes)}});
  }
  json nets = json::array();
  for (const NetworkDevice& n : t.network_devices) {
    nets.push_back({{"name", n.name}, {"rdma", n.rdma}, {"numa", optional_json(n.numa)}});
  }
  return {
      {"source", t.source},
      {"packages", t.packages},
      {"cores", t.cores.size()},
      {"pus", t.pu_count()},
      {"memory_bytes", t.memory_bytes()},
      {"numa_domains", std::move(domains)},
      {"core_map", std::move(core_map)},
      {"block_devices", std::move(blocks)},
      {"network_devices", std::move(nets)},
      {"distances", t.distances},
      {"notes", t.notes},
  };
}

Result<Topology> topology_from_json(const json& in) {
  using R = Reader;
  Topology t;
  t.source = LOOM_TRY(R::member(in, "", "source", R::string));
  t.packages = LOOM_TRY(R::member(in, "", "packages", R::index));

  const json& domains = LOOM_TRY(R::member(in, "", "numa_domains", R::array));
  if (domains.empty()) return R::fail("numa_domains", "must list at least one domain");
  for (std::size_t i = 0; i < domains.size(); ++i) {
    const std::string path = fmt::format("numa_domains[{}]", i);
    const json& jd = domains[i];
    NumaDomain d;
    d.os_index = LOOM_TRY(R::member(jd, path, "os_index", R::index));
    d.memory_bytes = LOOM_TRY(R::member(jd, path, "memory_bytes", R::u64));
    d.package = LOOM_TRY(R::member(jd, path, "package", R::optional_index));
    d.kind = LOOM_TRY(R::member(jd, path, "kind", R::string));
    d.cores = LOOM_TRY(R::member(jd, path, "cores", R::indexes));
    d.near = LOOM_TRY(R::member(jd, path, "near", R::indexes));
    if (!t.numa_domains.empty() && t.numa_domains.back().os_index >= d.os_index) {
      return R::fail(path + ".os_index", "must be greater than the previous domain's");
    }
    t.numa_domains.push_back(std::move(d));
  }

  const json& cores = LOOM_TRY(R::member(in, "", "core_map", R::array));
  std::set<unsigned> seen_pus;
  for (std::size_t i = 0; i < cores.size(); ++i) {
    const std::string path = fmt::format("core_map[{}]", i);
    Core c;
    c.logical_index = LOOM_TRY(R::member(cores[i], path, "core", R::index));
    if (c.logical_index != i)
      return R::fail(path + ".core", fmt::format("must be {}: cores are numbered 0, 1, ...", i));
    c.package = LOOM_TRY(R::member(cores[i], path, "package", R::index));
    c.pus = LOOM_TRY(R::member(cores[i], path, "pus", R::indexes));
    if (c.pus.empty()) return R::fail(path + ".pus", "must list at least one PU");
    for (unsigned pu : c.pus) {
      if (!seen_pus.insert(pu).second)
        return R::fail(path + ".pus", fmt::format("repeats PU {}", pu));
    }
    const NumaDomain* home = nullptr;
    for (const NumaDomain& d : t.numa_domains) {
      if (!std::ranges::binary_search(d.cores, c.logical_index)) continue;
      if (home != nullptr)
        return R::fail("numa_domains", fmt::format("list core {} in two domains", i));
      home = &d;
    }
    if (home == nullptr)
      return R::fail(path, fmt::format("core {} is in no NUMA domain's cores", i));
    c.numa = home->os_index;
    t.cores.push_back(std::move(c));
  }
  for (std::size_t i = 0; i < t.numa_domains.size(); ++i) {
    NumaDomain& d = t.numa_domains[i];
    for (unsigned core : d.cores) {
      if (core >= t.cores.size()) {
        return R::fail(fmt::format("numa_domains[{}].cores", i),
                       fmt::format("names core {}, which core_map lacks", core));
      }
      d.pus.insert(d.pus.end(), t.cores[core].pus.begin(), t.cores[core].pus.end());
    }
    std::ranges::sort(d.pus);
    for (unsigned near : d.near) {
      if (t.find_numa(near) == nullptr) {
        return R::fail(fmt::format("numa_domains[{}].near", i),
                       fmt::format("names domain {}, which does not exist", near));
      }
    }
  }

  auto device_numa = [&](const json& device,
                         const std::string& path) -> Result<std::optional<unsigned>> {
    auto numa = LOOM_TRY(R::member(device, path, "numa", R::optional_index));
    if (numa && t.find_numa(*numa) == nullptr) {
      return R::fail(path + ".numa", fmt::format("names domain {}, which does not exist", *numa));
    }
    return numa;
  };
  const json& blocks = LOOM_TRY(R::member(in, "", "block_devices", R::array));
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const std::string path = fmt::format("block_devices[{}]", i);
    BlockDevice b;
    b.name = LOOM_TRY(R::member(blocks[i], path, "name", R::string));
    b.nvme = LOOM_TRY(R::member(blocks[i], path, "nvme", R::boolean));
    b.numa = LOOM_TRY(device_numa(blocks[i], path));
    const json& capacity = LOOM_TRY(R::field(blocks[i], path, "capacity_bytes"));
    if (!capacity.is_null()) {
      b.capacity_bytes = LOOM_TRY(R::u64(capacity, path + ".capacity_bytes"));
    }
    t.block_devices.push_back(std::move(b));
  }
  const json& nets = LOOM_TRY(R::member(in, "", "network_devices", R::array));
  for (std::size_t i = 0; i < nets.size(); ++i) {
    const std::string path = fmt::format("network_devices[{}]", i);
    NetworkDevice n;
    n.name = LOOM_TRY(R::member(nets[i], path, "name", R::string));
    n.rdma = LOOM_TRY(R::member(nets[i], path, "rdma", R::boolean));
    n.numa = LOOM_TRY(device_numa(nets[i], path));
    t.network_devices.push_back(std::move(n));
  }

  const json& distances = LOOM_TRY(R::member(in, "", "distances", R::array));
  if (!distances.empty() && distances.size() != t.numa_domains.size()) {
    return R::fail("distances",
                   fmt::format("must have one row per NUMA domain ({})", t.numa_domains.size()));
  }
  for (std::size_t row = 0; row < distances.size(); ++row) {
    const std::string path = fmt::format("distances[{}]", row);
    const json& values = LOOM_TRY(R::array(distances[row], path));
    if (values.size() != t.numa_domains.size()) {
      return R::fail(
          path, fmt::format("must have one column per NUMA domain ({})", t.numa_domains.size()));
    }
    std::vector<std::uint64_t> out;
    for (std::size_t col = 0; col < values.size(); ++col) {
      const std::uint64_t value = LOOM_TRY(R::u64(values[col], fmt::format("{}[{}]", path, col)));
      out.push_back(value);
    }
    t.distances.push_back(std::move(out));
  }

  // Absent from topologies an older Loom wrote.
  if (in.contains("notes")) {
    const json& notes = LOOM_TRY(R::member(in, "", "notes", R::array));
    for (std::size_t i = 0; i < notes.size(); ++i)
      t.notes.push_back(LOOM_TRY(R::string(notes[i], fmt::format("notes[{}]", i))));
  }
  LOOM_TRY(check_derived(in, t));
  return t;
}

}  // namespace loom::hwtopo
