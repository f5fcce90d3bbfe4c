// The fixture of the end-to-end tests: `loom up` with two simulated nodes of 4 cores
// (2 NUMA domains of 2), a job directory every user may write, and `loom` as loom-alice.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "local_cluster.hpp"

namespace loom::testing {

class ClusterTest : public ::testing::Test {
 protected:
  // The daemons' configuration (TOML).
  virtual std::string config() const = 0;

  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "loom up runs agents as root, as loomd runs";
    dir_ = temp_path("jobs");
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 01777);
    cluster_ = make_cluster();
  }
  // Two nodes on loopback unless a test says otherwise.
  virtual std::unique_ptr<LocalCluster> make_cluster() const {
    return std::make_unique<LocalCluster>(2, "pack:1 numa:2 core:2 pu:1", config());
  }
  void TearDown() override {
    cluster_.reset();
    std::filesystem::remove_all(dir_);
  }

  Completed alice(const std::vector<std::string>& args) const {
    return cluster_->loom("loom-alice", args, dir_.string());
  }

  std::uint64_t submit(const std::vector<std::string>& args) {
    Completed done = alice(args);
    EXPECT_EQ(done.exit_code, 0) << done.err;
    return done.exit_code == 0 ? std::stoull(done.out) : 0;
  }

  nlohmann::json show(const std::string& id) {
    Completed done = alice({"show", id, "--json"});
    EXPECT_EQ(done.exit_code, 0) << done.err;
    return done.exit_code == 0 ? nlohmann::json::parse(done.out) : nlohmann::json();
  }
  nlohmann::json show(std::uint64_t id) { return show(std::to_string(id)); }

  // Polls `loom show --json` until the job is RUNNING with its ranks' applied binding
  // shown (bounded: 30 s); final states are waited for with finish().
  nlohmann::json wait_running(std::uint64_t id) {
    nlohmann::json j;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      j = show(id);
      if (j["state"] == "RUNNING" && !j["placement"].empty() &&
          !j["placement"][0]["bound_cpus"].is_null())
        return j;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " stayed " << j.dump();
    return j;
  }

  // `loom watch`: returns once the job has ended, with the job as it ended.
  nlohmann::json finish(const std::string& id) {
    Completed watched = alice({"watch", "--json", id});
    const std::vector<std::string> seen = lines(watched.out);
    EXPECT_FALSE(seen.empty()) << watched.err;
    return seen.empty() ? nlohmann::json() : nlohmann::json::parse(seen.back());
  }
  nlohmann::json finish(std::uint64_t id) { return finish(std::to_string(id)); }

  // A job to restart an agent under: it prints "start" to `output`, waits for the file
  // `go`, prints "end" and exits 3.
  std::uint64_t submit_gated(const std::string& output) {
    return submit({"submit", "-o", output, "--", "sh", "-c",
                   "echo start; while [ ! -e go ]; do sleep 0.05; done; echo end; exit 3"});
  }
  // Lets that job end, and checks it ran once and ended as it did, whichever agent saw it.
  void expect_gated_ran_once(std::uint64_t id, const std::string& output) {
    std::ofstream(dir_ / "go") << "";
    const nlohmann::json j = finish(id);
    EXPECT_EQ(j["state"], "FAILED");
    EXPECT_EQ(j["exit_code"], 3) << "the agent learned how the job ended";
    EXPECT_EQ(read(output), "start\nend\n") << "ran once";
  }

  std::string read(const std::string& name) const {
    std::ifstream in(dir_ / name);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // The storage agent's export, with a results/ directory loom-alice owns (stage-out's).
  std::filesystem::path storage_with_results() const {
    const std::filesystem::path exported = cluster_->storage_export();
    std::filesystem::create_directories(exported / "results");
    const passwd* alice = ::getpwnam("loom-alice");
    EXPECT_NE(alice, nullptr);
    if (alice != nullptr) {
      EXPECT_EQ(::chown((exported / "results").c_str(), alice->pw_uid, alice->pw_gid), 0);
    }
    return exported;
  }

  // Jobs' slices still on the devices of loom up's nodes (their images and mount points).
  std::vector<std::string> slices_left() const {
    std::vector<std::string> out;
    for (const auto& entry : std::filesystem::directory_iterator(cluster_->state_dir() / "state")) {
      if (!entry.path().filename().string().starts_with("nvme-") || !entry.is_directory()) continue;
      for (const auto& inside : std::filesystem::recursive_directory_iterator(entry.path())) {
        if (inside.path().filename().string().starts_with("job_"))
          out.push_back(inside.path().string());
      }
    }
    return out;
  }

  // The pid of loom up's child with command name `comm` whose command line holds `word`.
  pid_t daemon(const std::string& comm, const std::string& word = "") const {
    for (const std::string& line :
         lines(run({"pgrep", "-x", "-P", std::to_string(cluster_->pid()), comm}).out)) {
      std::string cmdline = proc_file(fmt::format("/proc/{}/cmdline", line));
      std::ranges::replace(cmdline, '\0', ' ');
      if (cmdline.find(word) != std::string::npos) return std::stoi(line);
    }
    ADD_FAILURE() << "no " << comm << " " << word << " under loom up";
    return -1;
  }

  std::filesystem::path dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

}  // namespace loom::testing
