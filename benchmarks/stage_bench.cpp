// stage_bench: HDF5 dataset staging over the fabric, beside the same run's ceilings and peers.
//
// Generates three HDF5 files (a chunked uncompressed dataset, the same gzip-compressed, and
// 10,000 small datasets), then for each provider (tcp;ofi_rxm, shm) stages each file's
// datasets from a storage agent's export into a destination directory, as a job's stage-in
// does (a StorageServer and a Stager, one process, talking over the provider). Beside it,
// measured in the same run on the same files: reading the source, writing the destination,
// the fabric (loom-fabric-bw's RMA reads), `cp` and `h5copy`. Every
// timed copy starts from a cold source (posix_fadvise DONTNEED) and ends synced; runs
// alternate Loom and the peers, and medians are reported.
#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "loom/burstbuffer/data_plane.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/munge.hpp"

namespace {

using namespace loom;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "stage_bench: %s\n", what.c_str());
  std::exit(1);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::ranges::sort(v);
  return v.empty() ? 0 : v[v.size() / 2];
}

// Evicts a file from the page cache, so that the next read comes from the disk.
void evict(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

int shell(const std::string& command) { return std::system(command.c_str()); }

// Resident memory now (VmRSS) or at its peak since the last reset (VmHWM), in MiB; writing 5
// to clear_refs resets the peak to what is resident now.
double status_mb(std::string_view field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field)) return std::stod(line.substr(field.size())) / 1024.0;
  }
  return 0;
}
double reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
  return status_mb("VmRSS:");
}

// RMA read bandwidth of 4 MiB operations between two processes over the provider, as
// loom-fabric-bw (beside this program) measures it.
double fabric_gbps(const std::string& provider, int port) {
  const fs::path bw = fs::read_symlink("/proc/self/exe").parent_path() / "loom-fabric-bw";
  const fs::path out =
      fs::temp_directory_path() / fmt::format("stage-bench-fabric-{}.json", ::getpid());
  const std::string command = fmt::format(
      "{0} --provider '{1}' --port {2} --op read 2>/dev/null & server=$!; "
      "for i in $(seq 100); do {0} --provider '{1}' --port {2} --op read --size 4M --json "
      "127.0.0.1 >{3} 2>/dev/null && break; "
      "sleep 0.05; done; wait $server",
      bw.string(), provider, port, out.string());
  if (shell(command) != 0) die("measuring the fabric with " + bw.string());
  std::ifstream in(out);
  const nlohmann::json result = nlohmann::json::parse(in, nullptr, false);
  fs::remove(out);
  if (result.is_discarded()) die("loom-fabric-bw printed no JSON");
  return result["results"][0]["bw_avg_gbps"].get<double>();
}

struct TestFile {
  std::string name;                   // in the export
  std::vector<std::string> datasets;  // staged by dataset
  std::uint64_t data_bytes = 0;       // what the datasets hold, as stored
  std::string h5copy_object;          // what h5copy copies (a group copies everything under it)
};

// Rows of 1 MiB (one chunk each) of float32, smooth enough for gzip to matter.
TestFile make_chunked(const fs::path& dir, const std::string& name, std::uint64_t bytes,
                      bool gzip) {
  const hsize_t columns = 262144, rows = std::max<hsize_t>(1, bytes / (columns * 4));
  const fs::path path = dir / name;
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[] = {rows, columns}, chunk[] = {1, columns};
  const hid_t space = H5Screate_simple(2, dims, nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 2, chunk);
  if (gzip) H5Pset_deflate(dcpl, 1);
  const hid_t d = H5Dcreate2(file, "/data", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  std::vector<float> row(columns);
  const hid_t memory = H5Screate_simple(2, chunk, nullptr);
  for (hsize_t r = 0; r < rows; ++r) {
    for (hsize_t c = 0; c < columns; ++c) row[c] = static_cast<float>((r * 31 + c) % 1000) * 0.5f;
    const hsize_t start[] = {r, 0};
    const hid_t selected = H5Dget_space(d);
    H5Sselect_hyperslab(selected, H5S_SELECT_SET, start, nullptr, chunk, nullptr);
    H5Dwrite(d, H5T_NATIVE_FLOAT, memory, selected, H5P_DEFAULT, row.data());
    H5Sclose(selected);
  }
  const std::uint64_t stored = H5Dget_storage_size(d);
  H5Sclose(memory);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(file);
  return {name, {"/data"}, stored, "/data"};
}

TestFile make_small(const fs::path& dir, unsigned count) {
  const fs::path path = dir / "small.h5";
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t n = 256;
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  std::vector<std::int32_t> values(n);
  TestFile t{"small.h5", {}, 0, "/g"};
  const hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  for (unsigned i = 0; i < count; ++i) {
    for (hsize_t k = 0; k < n; ++k) values[k] = static_cast<std::int32_t>(i + k);
    const std::string name = fmt::format("/g/{}/d{}", i / 100, i);
    const hid_t d =
        H5Dcreate2(file, name.c_str(), H5T_STD_I32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(d);
    t.datasets.push_back(name);
    t.data_bytes += n * 4;
  }
  H5Pclose(lcpl);
  H5Sclose(space);
  H5Fclose(file);
  return t;
}

// Reads a file from the disk (cold), 4 MiB at a time into one pre-touched buffer.
double read_gbps(const fs::path& file) {
  evict(file);
  std::vector<char> buffer(4 << 20, 1);
  const int fd = ::open(file.c_str(), O_RDONLY);
  const auto start = Clock::now();
  std::uint64_t total = 0;
  for (ssize_t n; (n = ::read(fd, buffer.data(), buffer.size())) > 0;)
    total += static_cast<std::uint64_t>(n);
  const double s = seconds_since(start);
  ::close(fd);
  return static_cast<double>(total) / s / 1e9;
}

// Writes `bytes` into a new file in `dir` from one pre-touched buffer, synced.
double write_gbps(const fs::path& dir, std::uint64_t bytes) {
  std::vector<char> buffer(4 << 20, 7);
  const fs::path file = dir / "write-ceiling";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const auto start = Clock::now();
  for (std::uint64_t done = 0; done < bytes; done += buffer.size()) {
    if (::write(fd, buffer.data(), buffer.size()) < 0) die("writing the ceiling file");
  }
  ::fsync(fd);
  const double s = seconds_since(start);
  ::close(fd);
  fs::remove(file);
  return static_cast<double>(bytes) / s / 1e9;
}

struct Side {
  std::unique_ptr<burstbuffer::StorageServer> storage;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<burstbuffer::Stager> stager;
  std::string address;
};

Side open_side(const fs::path& exported, const std::string& provider) {
  burstbuffer::DataPlaneOptions options;
  options.fabric = {provider, provider == "shm" ? "" : "lo"};
  options.h5skeleton = LOOM_H5SKELETON;
  Side side;
  auto storage = burstbuffer::StorageServer::open(
      {exported, "stage-bench", exported.parent_path() / "storage-writes"}, options);
  if (!storage) die(storage.error().to_string());
  side.storage = std::move(*storage);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(side.storage.get());
  side.server = builder.BuildAndStart();
  side.address = fmt::format("127.0.0.1:{}", port);
  auto stager = burstbuffer::Stager::open(options);
  if (!stager) die(stager.error().to_string());
  side.stager = std::move(*stager);
  return side;
}

// Stages the file's datasets into `dest`; seconds, and the peak RSS while doing it.
std::pair<double, double> stage(Side& side, const TestFile& t, const fs::path& dest) {
  auto credential = munge_credential();
  if (!credential) die(credential.error().to_string());
  const int dir = ::open(dest.c_str(), O_PATH | O_DIRECTORY);
  burstbuffer::FileProgress progress;
  std::atomic<bool> cancelled{false};
  const double resident = reset_peak_rss();
  const auto start = Clock::now();
  auto done = side.stager->fetch({side.address, *credential, 0, 0}, "/" + t.name, dir, t.name,
                                 progress, cancelled, t.datasets);
  const double s = seconds_since(start);
  ::close(dir);
  if (!done) die(fmt::format("staging {}: {}", t.name, done.error().to_string()));
  return {s, status_mb("VmHWM:") - resident};
}

double timed_command(const std::string& command, const fs::path& source, const fs::path& target) {
  evict(source);
  fs::remove(target);
  const auto start = Clock::now();
  if (shell(command + " && sync " + target.string()) != 0) die("failed: " + command);
  return seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "stage_bench: HDF5 dataset staging over libfabric beside the same run's ceilings, cp and "
      "h5copy"};
  std::string dir_text = "/var/tmp/loom-stage-bench", size_text = "2GiB";
  unsigned rounds = 3, small_count = 10000;
  std::vector<std::string> providers{"tcp;ofi_rxm", "shm"};
  bool json = false, keep = false;
  app.add_option("--dir", dir_text, "Where the files are made (on the disk measured)")
      ->capture_default_str();
  app.add_option("--size", size_text, "The large files' data size")->capture_default_str();
  app.add_option("--small", small_count, "Datasets in the small-datasets file")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds, alternating Loom and the peers; medians reported")
      ->capture_default_str();
  app.add_option("--provider", providers, "Providers to stage over")->capture_default_str();
  app.add_flag("--json", json, "Print one JSON object");
  app.add_flag("--keep", keep, "Keep the generated files");
  CLI11_PARSE(app, argc, argv);
  const auto size = parse_bytes(size_text);
  if (!size) die(size.error().to_string());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);

  const fs::path dir = dir_text, exported = dir / "export", dest = dir / "dest";
  fs::create_directories(exported);
  fs::create_directories(dest);
  std::fprintf(stderr, "stage_bench: making the files in %s\n", exported.c_str());
  std::vector<TestFile> files{make_chunked(exported, "chunked.h5", size->count(), false),
                              make_chunked(exported, "gzip.h5", size->count(), true),
                              make_small(exported, small_count)};

  std::map<std::string, double> fabric;
  for (std::size_t i = 0; i < providers.size(); ++i)
    fabric[providers[i]] = fabric_gbps(providers[i], 18650 + static_cast<int>(i));
  nlohmann::json results = nlohmann::json::array();
  for (const TestFile& t : files) {
    const fs::path source = exported / t.name;
    const std::uint64_t file_bytes = fs::file_size(source);
    std::vector<double> reads, writes, cps, h5copies;
    std::map<std::string, std::vector<double>> loom, rss;
    for (unsigned round = 0; round < rounds; ++round) {
      for (const std::string& provider : providers) {
        Side side = open_side(exported, provider);
        evict(source);
        fs::remove(dest / t.name);
        auto [s, peak] = stage(side, t, dest);
        loom[provider].push_back(s);
        rss[provider].push_back(peak);
      }
      reads.push_back(read_gbps(source));
      writes.push_back(write_gbps(dest, file_bytes));
      cps.push_back(
          timed_command(fmt::format("cp {} {}", source.string(), (dest / "cp.h5").string()), source,
                        dest / "cp.h5"));
      h5copies.push_back(timed_command(
          fmt::format("h5copy -i {} -o {} -s {} -d {}", source.string(),
                      (dest / "h5copy.h5").string(), t.h5copy_object, t.h5copy_object),
          source, dest / "h5copy.h5"));
      fs::remove(dest / "cp.h5");
      fs::remove(dest / "h5copy.h5");
    }
    const auto bytes = static_cast<double>(t.data_bytes);
    for (const std::string& provider : providers) {
      const double limit = std::min({median(reads), median(writes), fabric[provider]});
      results.push_back({{"file", t.name},
                         {"provider", provider},
                         {"data_bytes", t.data_bytes},
                         {"gbps", bytes / median(loom[provider]) / 1e9},
                         {"limit_gbps", limit},
                         {"source_read_gbps", median(reads)},
                         {"dest_write_gbps", median(writes)},
                         {"fabric_gbps", fabric[provider]},
                         {"h5copy_gbps", bytes / median(h5copies) / 1e9},
                         {"cp_gbps", static_cast<double>(file_bytes) / median(cps) / 1e9},
                         {"peak_rss_mb", median(rss[provider])}});
    }
    fs::remove(dest / t.name);
  }
  if (!keep) {
    fs::remove_all(dir);
  }

  const nlohmann::json conditions = {
      {"rounds", rounds},
      {"large_file_bytes", size->count()},
      {"chunk_bytes", 1 << 20},
      {"small_datasets", small_count},
      {"pipeline",
       "8 buffers of 4 MiB per side, allocated once; the stager's registered once, the "
       "storage agent's per lease (its bytes only)"},
      {"cold_source", "posix_fadvise DONTNEED before every timed copy; every copy synced"},
      {"fabric", "loom-fabric-bw: RMA reads of 4 MiB between two processes, 16 in flight"},
      {"peak_rss_mb",
       "growth of the peak resident memory while staging, over what was resident before"},
      {"gbps", "dataset bytes as stored / seconds (cp: file bytes)"},
      {"same_process",
       "the storage agent's server and the stager share one process; peak RSS counts both"}};
  if (json) {
    std::cout << nlohmann::json{{"results", results}, {"conditions", conditions}}.dump(2) << '\n';
    return 0;
  }
  std::cout << fmt::format("{:<11} {:<12} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                           "FILE", "PROVIDER", "LOOM", "LIMIT", "OF", "READ", "WRITE", "FABRIC",
                           "H5COPY", "CP", "+RSS MB");
  for (const nlohmann::json& r : results) {
    std::cout << fmt::format(
        "{:<11} {:<12} {:>8.2f} {:>8.2f} {:>5.0f}% {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} "
        "{:>8.0f}\n",
        r["file"].get<std::string>(), r["provider"].get<std::string>(), r["gbps"].get<double>(),
        r["limit_gbps"].get<double>(),
        100 * r["gbps"].get<double>() / r["limit_gbps"].get<double>(),
        r["source_read_gbps"].get<double>(), r["dest_write_gbps"].get<double>(),
        r["fabric_gbps"].get<double>(), r["h5copy_gbps"].get<double>(), r["cp_gbps"].get<double>(),
        r["peak_rss_mb"].get<double>());
  }
  std::cout << fmt::format(
      "GB/s, medians of {} rounds; {} files of {} (1 MiB chunks), {} small datasets; cold sources, "
      "synced "
      "destinations; LIMIT is the lowest of READ, WRITE and FABRIC\n",
      rounds, format_bytes(Bytes(size->count())), "data", small_count);
  return 0;
}
