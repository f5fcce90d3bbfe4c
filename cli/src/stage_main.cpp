// loom-stage, run as `loom stage SRC DST`: an ad hoc staging between this machine and a
// storage agent's export, over the same data plane jobs use, as the user who runs it, with
// a progress bar. A program of its own, as loom-fabric is: it links libfabric.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "loom/burstbuffer/data_plane.hpp"
#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/config.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/programs.hpp"
#include "loom/common/unique_fd.hpp"

namespace {

using namespace loom;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> interrupted{false};

// NODE:/path names a storage agent's file (NODE:/file.h5:/dset,... some of its HDF5
// datasets, as a source); anything else is local.
struct Remote {
  std::string node, path;
  std::vector<std::string> datasets;
};
Result<std::optional<Remote>> remote_of(const std::string& text, bool source) {
  const std::size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || text.size() <= colon + 1 ||
      text[colon + 1] != '/')
    return std::nullopt;
  if (!source)
    return Remote{
        text.substr(0, colon), text.substr(colon + 1), {}};  // a file, or a directory ending in '/'
  const v1::StageIn in = LOOM_TRY(burstbuffer::parse_stage_in(text));
  return Remote{in.export_name(), in.path(), {in.datasets().begin(), in.datasets().end()}};
}

Result<std::string> data_address(const client::Client& client, const std::string& node) {
  v1::NodesRequest request;
  *request.mutable_caller() = LOOM_TRY(client::me());
  v1::NodesReply reply;
  grpc::ClientContext call;
  if (grpc::Status s = client.stub->Nodes(&call, request, &reply); !s.ok())
    return std::unexpected(client.error(s));
  for (const v1::NodeInfo& n : reply.nodes()) {
    if (n.name() == node && n.role() == "storage") return n.data_address();
  }
  return make_error(
      ErrorCode::kNotFound,
      fmt::format("{} is not a storage agent connected to the controller (loom nodes)", node));
}

std::string progress_line(const std::string& name, std::uint64_t done, std::uint64_t total,
                          double seconds) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
  const int filled = percent * 30 / 100;
  std::string line = fmt::format(
      "{} [{}{}] {:3}% {}/{} {}/s", name, std::string(static_cast<std::size_t>(filled), '#'),
      std::string(static_cast<std::size_t>(30 - filled), ' '), percent, format_bytes(Bytes(done)),
      format_bytes(Bytes(total)), format_bytes(Bytes(static_cast<std::uint64_t>(rate))));
  if (rate > 0 && done < total)
    line += fmt::format(" ETA {:.0f} s", static_cast<double>(total - done) / rate);
  return line;
}

}  // namespace

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  CLI::App app{
      "loom stage: copy a file between here and a storage agent's export over the fabric, as you, "
      "with "
      "a progress bar. One side is NODE:/path (a file in the export of storage agent NODE; as SRC, "
      "NODE:/file.h5:/group/dset,... copies only those HDF5 datasets, as stored); a DST that ends "
      "with "
      "'/' or is a directory gets SRC's name."};
  app.name("loom stage");
  std::optional<fs::path> config_file;
  std::string source, dest, controller;
  bool json = false;
  app.add_option("--config", config_file, loom::kConfigHelp);
  app.add_option("--controller", controller, loom::client::kControllerHelp);
  app.add_option("source", source, "What to copy: NODE:/path, or a local file")->required();
  app.add_option("dest", dest, "Where: a local path, or NODE:/path")->required();
  app.add_flag("--json", json, "Print one JSON object when done instead of the progress bar");
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    (void)std::fprintf(stderr, "loom: %s\n", e.to_string().c_str());
    return 1;
  };
  auto config = start_program("loom", config_file);
  if (!config) return fail(config.error());
  auto parsed_from = remote_of(source, true), parsed_to = remote_of(dest, false);
  if (!parsed_from) return fail(parsed_from.error());
  if (!parsed_to) return fail(parsed_to.error());
  const std::optional<Remote>& from = *parsed_from;
  const std::optional<Remote>& to = *parsed_to;
  if (from.has_value() == to.has_value()) {
    return fail(Error(ErrorCode::kInvalidArgument,
                      "exactly one of SRC and DST must be NODE:/path (a storage agent's file)"));
  }
  auto client = client::connect(controller, *config);
  if (!client) return fail(client.error());
  auto address = data_address(*client, from ? from->node : to->node);
  if (!address) return fail(address.error());
  auto credential = munge_credential();
  if (!credential) return fail(credential.error());
  const burstbuffer::Remote remote{*address, *credential, 0, 0, client::current_umask()};
  burstbuffer::DataPlaneOptions options;
  options.fabric = {config->fabric.provider, config->fabric.interface};
  options.stall_timeout = config->staging.stall_timeout;
  options.tls = client->tls;
  if (from && !from->datasets.empty()) {  // HDF5 datasets: their skeleton is placed by it
    auto h5skeleton = find_program("loom-h5skeleton", "burstbuffer");
    if (!h5skeleton) return fail(h5skeleton.error());
    options.h5skeleton = std::move(*h5skeleton);
  }
  auto stager = burstbuffer::Stager::open(options);
  if (!stager) return fail(stager.error());

  // Ctrl-C stops the copy; what it wrote is removed.
  (void)std::signal(SIGINT, [](int) { interrupted.store(true); });
  burstbuffer::FileProgress progress;
  Status copied;
  std::string shown_dest;
  std::vector<std::string> notes;  // HDF5 datasets: what could not be carried
  const auto start = Clock::now();
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::thread copy([&] {
    if (from) {
      fs::path local = dest;
      if (dest.ends_with('/') || fs::is_directory(local)) local /= fs::path(from->path).filename();
      shown_dest = local.string();
      const fs::path parent = local.parent_path().empty() ? fs::path(".") : local.parent_path();
      const UniqueFd dir(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!dir) {
        copied = make_error(ErrorCode::kNotFound,
                            fmt::format("{}: {}", parent.string(), loom::errno_text(errno)));
      } else {
        copied = (*stager)->fetch(remote, from->path, dir.get(), local.filename().string(),
                                  progress, interrupted, from->datasets, &notes);
      }
    } else {
      std::string path = to->path;
      if (path.ends_with('/')) path += fs::path(source).filename().string();
      shown_dest = to->node + ":" + path;
      const UniqueFd fd(::open(source.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      if (!fd) {
        copied = make_error(ErrorCode::kNotFound,
                            fmt::format("{}: {}", source, loom::errno_text(errno)));
      } else {
        copied = (*stager)->store(remote, fd.get(), path, progress, interrupted);
      }
    }
    std::lock_guard lock(mutex);
    done = true;
    done_cv.notify_all();
  });
  const bool bar = !json && ::isatty(STDERR_FILENO);
  const std::string name = fs::path(from ? from->path : source).filename().string();
  {
    std::unique_lock lock(mutex);
    while (!done_cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return done; })) {
      if (bar) {
        std::cerr << '\r'
                  << progress_line(name, progress.done.load(), progress.total.load(),
                                   std::chrono::duration<double>(Clock::now() - start).count())
                  << std::flush;
      }
    }
  }
  copy.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!copied) {
    if (bar) std::cerr << '\n';
    return fail(copied.error());
  }
  for (const std::string& note : notes) std::cerr << "loom stage: " << note << '\n';
  const std::uint64_t bytes = progress.done.load();
  const double rate = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
  if (json) {
    std::cout << nlohmann::json{{"source", source},   {"dest", shown_dest}, {"bytes", bytes},
                                {"seconds", seconds}, {"rate_bps", rate},   {"notes", notes}}
                     .dump()
              << '\n';
    return 0;
  }
  if (bar) std::cerr << '\r' << progress_line(name, bytes, progress.total.load(), seconds) << '\n';
  std::cout << fmt::format("staged {} -> {}: {} in {:.2f} s ({}/s), every range checked\n", source,
                           shown_dest, format_bytes(Bytes(bytes)), seconds,
                           format_bytes(Bytes(static_cast<std::uint64_t>(rate))));
  return 0;
}
