// Staging's data plane: whole files moved between a storage agent's export and a compute
// node (a job's slice, or `loom stage`'s local side) as byte ranges over loom::fabric.
//
// The storage agent is passive on the fabric: it owns a few registered buffers and lends
// them out (a lease) through the gRPC Storage service. To read a range, the stager asks
// for it (Fetch: the storage agent reads it from the file into a buffer and checksums it),
// pulls it with fi_read into a registered buffer of its own, checks the CRC-32C and writes
// it to the destination; to write one, it reads it from its file, asks for a buffer
// (Reserve), pushes it with fi_write and commits it (the storage agent checks the CRC-32C
// and writes it). Several ranges are in flight at once, each on a worker of its own, so
// that disk reads, transfers and disk writes overlap. A range whose transfer fails or whose
// checksum does not match is tried again; a file that fails leaves nothing behind: it is
// written under a temporary name and renamed only when whole and synced.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/fabric/fabric.hpp"
#include "loom/proto/storage.grpc.pb.h"
#include "loom/proto/tls.hpp"

namespace loom::burstbuffer {

struct Piece;

struct DataPlaneOptions {
  fabric::Options fabric;
  std::size_t range = std::size_t{4} << 20;  // bytes per range: one buffer
  std::size_t buffers = 8;  // registered buffers (storage: leases; stager: ranges in flight)
  int attempts = 3;         // tries per range before the file fails
  std::chrono::seconds lease_timeout{30};  // a lease not released by then is taken back
  // The stager's staging.stall_timeout: a call to the storage agent, or a transfer, with no
  // answer for this long fails the copy, naming the file (a storage agent stopped, a link
  // gone); it is not tried again.
  std::chrono::seconds stall_timeout{60};
  // The node's TLS (loom/proto/tls.hpp): the stager's channels to storage agents, a storage
  // agent's check that an agent acting for a job's user is a host of the cluster, and the
  // agent's own channel to the controller.
  tls::Tls tls;
  // loom-h5skeleton, which parses HDF5 files that came from users, as them: a storage
  // agent's for each Describe, a stager's for each skeleton it fetched (src/skeleton_reader.hpp).
  std::filesystem::path h5skeleton;
};

// What a storage agent serves, and as whom.
struct StorageExport {
  std::filesystem::path root;  // files are served beneath it
  // The agent's name: part of every temporary file's name (.NAME.loom-AGENT-XXXXXXXX), so
  // that on an export several agents write, each file says who was writing it.
  std::string agent;
  // A directory of the agent's own (its state directory's storage-writes/): what it is
  // writing, so that its next start removes what a crash left (write_journal.hpp).
  std::filesystem::path journal;
};

// The Storage service of a storage agent, serving files beneath one export root.
class StorageServer final : public v1::Storage::Service {
 public:
  // Removes the temporary files this agent's previous run left, first.
  static Result<std::unique_ptr<StorageServer>> open(const StorageExport& exported,
                                                     const DataPlaneOptions& options);
  ~StorageServer() override;

  grpc::Status Open(grpc::ServerContext*, const v1::OpenRequest*, v1::OpenReply*) override;
  grpc::Status Fetch(grpc::ServerContext*, const v1::RangeRequest*, v1::Lease*) override;
  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest*, v1::Empty*) override;
  grpc::Status Reserve(grpc::ServerContext*, const v1::RangeRequest*, v1::Lease*) override;
  grpc::Status Commit(grpc::ServerContext*, const v1::CommitRequest*, v1::Empty*) override;
  grpc::Status Finish(grpc::ServerContext*, const v1::HandleRequest*, v1::Empty*) override;
  grpc::Status Close(grpc::ServerContext*, const v1::HandleRequest*, v1::Empty*) override;
  grpc::Status Describe(grpc::ServerContext*, const v1::DescribeRequest*,
                        v1::DescribeReply*) override;

 private:
  struct State;
  explicit StorageServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A file's progress, read by whoever reports it while the copy runs.
struct FileProgress {
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> total{0};
};

// Where a copy's remote side is, and as whom it acts there.
struct Remote {
  std::string address;     // the storage agent's Storage service, HOST:PORT
  std::string credential;  // Munge: a user's, or root's with uid and gid
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t umask = 022;  // whose files a copy makes there get 0666 & ~umask
};

// The initiating side: one endpoint and its buffers, for copies one after another (a copy
// uses every buffer at once). Not for concurrent use.
class Stager {
 public:
  static Result<std::unique_ptr<Stager>> open(const DataPlaneOptions& options);
  ~Stager();
  // A transfer got no completion within the engine's timeout (a peer hung): the provider
  // may still own this stager's buffers, so it copies nothing more. Open another.
  bool broken() const;

  // Copies the export's `path` into directory `dir_fd` as `name`. The caller's file-system
  // identity is the one the destination is created with. With `datasets`, `path` is an HDF5
  // file and only those datasets are copied, as stored (hdf5_plan.hpp); `notes` gets what
  // could not be carried.
  Status fetch(const Remote& remote, const std::string& path, int dir_fd, const std::string& name,
               FileProgress& progress, const std::atomic<bool>& cancelled,
               std::span<const std::string> datasets = {},
               std::vector<std::string>* notes = nullptr);
  // Copies the open file `fd` to the export's `path` (a file in an existing directory).
  Status store(const Remote& remote, int fd, const std::string& path, FileProgress& progress,
               const std::atomic<bool>& cancelled);

 private:
  struct State;
  explicit Stager(std::unique_ptr<State> state);
  // Reads the pieces of an open remote file, several at once, each checked and retried.
  Status pull(v1::Storage::Stub& stub, fi_addr_t peer, const std::string& handle,
              const std::vector<Piece>& pieces, FileProgress& progress,
              const std::atomic<bool>& cancelled);
  std::unique_ptr<State> state_;
};

}  // namespace loom::burstbuffer
