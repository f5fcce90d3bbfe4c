// The storage agent's side of the data plane, behind StorageServer's RPCs: the files open
// for stagers (handles), the buffers lent to one range of one copy at a time (slots, each
// exposed to its peer for exactly that range under a random key), and the fabric thread that
// owns the endpoint.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <rdma/fi_errno.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "data_plane_io.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/common/crc32c.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/fabric/progress.hpp"
#include "loom/fabric/wire.hpp"
#include "loom/proto/status.hpp"
#include "write_journal.hpp"

namespace loom::burstbuffer {

using Clock = std::chrono::steady_clock;

// A lease's or a handle's name: 128 random bits, hex.
inline std::string random_token() {
  std::array<unsigned char, 16> bytes{};
  for (std::size_t got = 0; got < bytes.size();) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  std::string out;
  for (unsigned char b : bytes) out += fmt::format("{:02x}", b);
  return out;
}

struct StorageServer::State {
  struct Handle {
    // Shared with the calls that read or write it outside `mutex`: a Close meanwhile must
    // not let the number be reused for another user's file while they still use it.
    std::shared_ptr<const UniqueFd> file;
    UniqueFd dir;  // writing: the directory the file goes in
    bool write = false;
    std::string path;  // as asked, for messages
    std::string temp, name;
    std::string journal_id;  // writing: its record in the write journal
    uid_t uid = 0;
    gid_t gid = 0;
    Clock::time_point used;
  };
  // A buffer lent to one range of one copy at a time. What a peer may reach is registered
  // per lease: exactly the leased bytes, for the one access the lease is for (the peer reads
  // what Fetch put there, or writes what Commit will check), under a random key, and
  // closed before the slot is lent again. Every registered byte holds the lease's own data
  // or zeros, never an earlier copy's.
  struct Slot {
    std::vector<std::byte> memory;
    std::unique_ptr<fabric::MemoryRegion> region;  // while leased and exposed
    std::string lease;                             // empty: free
    std::string handle;
    std::uint64_t offset = 0, length = 0;
    Clock::time_point deadline;
  };

  UniqueFd root;
  std::string agent;
  std::optional<WriteJournal> journal;
  DataPlaneOptions options;
  std::shared_ptr<fabric::Endpoint> endpoint;
  std::string target;  // the endpoint's name, hex

  std::mutex mutex;  // guards handles and slots
  std::condition_variable freed;
  std::map<std::string, Handle> handles;
  std::vector<Slot> slots;

  // The fabric thread owns the endpoint (FI_THREAD_DOMAIN): it drives the provider while a
  // lease is out (a peer's fi_read or fi_write progresses only while the target polls,
  // under FI_PROGRESS_MANUAL) and sleeps otherwise; every other use of the domain
  // (inserting initiators' addresses, registering and closing leases' regions) is a call
  // it runs. Started last by StorageServer::open, stopped first.
  std::unique_ptr<fabric::ProgressThread> progress;
  std::set<std::string> known;  // names inserted, hex; the fabric thread's

  ~State() {
    progress.reset();
    for (auto& [token, h] : handles) close_handle(h);
  }

  // Inserts an initiator's endpoint name (hex) into the address vector, once.
  Status know(const std::string& hex) {
    std::vector<std::byte> name = LOOM_TRY(fabric::decode_name(hex));
    return progress->run([&]() -> Status {
      if (known.contains(hex)) return {};
      LOOM_TRY(endpoint->av().insert(name));
      known.insert(hex);
      return {};
    });
  }

  // Lets the lease's holder reach exactly `length` bytes of its slot, for `access` only.
  // Under `mutex`, with the lease checked: a slot lent again is never exposed for the old one.
  Status expose(Slot& s, std::size_t length, std::uint64_t access) {
    auto region = progress->run([&] {
      return fabric::MemoryRegion::register_memory(*endpoint, s.memory.data(), length, access);
    });
    if (!region) return std::unexpected(region.error());
    s.region = std::move(*region);
    return {};
  }

  // Closes the slot's registration: its key reaches nothing from here on.
  void conceal(Slot& s) {
    if (s.region) progress->run([&] { s.region.reset(); });
  }

  // On the fabric thread: leases whose holder never gave them back are taken back now, not
  // when the slot is next wanted, so that their keys die with them. Skipped while another
  // thread holds `mutex` (it may be waiting on a call of this thread's).
  void expire_leases() {
    std::unique_lock state(mutex, std::try_to_lock);
    if (!state) return;
    const auto now = Clock::now();
    for (Slot& s : slots) {
      if (s.lease.empty() || s.deadline > now) continue;
      spdlog::warn("storage: a lease on {} was not released within {} s; taken back", s.handle,
                   options.lease_timeout.count());
      s.region.reset();
      s.lease.clear();
      progress->hold(-1);
      freed.notify_one();
    }
  }

  void close_handle(Handle& h) const {
    if (h.write && !h.temp.empty())
      ::unlinkat(h.dir.get(), h.temp.c_str(), 0);  // never finished: nothing partial stays
    if (h.write && !h.journal_id.empty()) journal->end(h.journal_id);
    h.file.reset();
    h.dir.reset();
  }

  // Takes a free slot (or one whose lease ran out) for the handle's range; waits a while
  // when every buffer is lent.
  Result<std::size_t> acquire(std::unique_lock<std::mutex>& lock, const std::string& handle,
                              std::uint64_t offset, std::uint64_t length) {
    const auto give_up = Clock::now() + std::chrono::seconds(5);
    for (;;) {
      const auto now = Clock::now();
      for (std::size_t i = 0; i < slots.size(); ++i) {
        Slot& s = slots[i];
        if (!s.lease.empty() && s.deadline > now) continue;
        if (!s.lease.empty()) {
          spdlog::warn("storage: a lease on {} was not released within {} s; taken back", s.handle,
                       options.lease_timeout.count());
          release(s);
        }
        s.lease = random_token();
        s.handle = handle;
        s.offset = offset;
        s.length = length;
        s.deadline = now + options.lease_timeout;
        progress->hold(+1);
        return i;
      }
      if (freed.wait_until(lock, give_up) == std::cv_status::timeout) {
        return make_error(ErrorCode::kUnavailable,
                          "every staging buffer of the storage agent is in use");
      }
    }
  }

  void release(Slot& s) {
    conceal(s);
    s.lease.clear();
    progress->hold(-1);
    freed.notify_one();
  }

  Slot* find_lease(const std::string& lease) {
    for (Slot& s : slots) {
      if (!lease.empty() && s.lease == lease) return &s;
    }
    return nullptr;
  }

  // Lends a slot for a range of an open file: filled from the file to be read (Fetch), or
  // cleared to be written (Reserve); then exposed for that one access.
  grpc::Status lend(const v1::RangeRequest& request, bool write, v1::Lease& reply) {
    if (request.length() == 0 || request.length() > options.range) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              fmt::format("a range of {} bytes (1 to {}, a buffer, expected)", request.length(),
                          options.range)};
    }
    const auto length = static_cast<std::size_t>(request.length());
    std::unique_lock lock(mutex);
    auto it = handles.find(request.handle());
    if (it == handles.end() || it->second.write != write) {
      return {grpc::StatusCode::NOT_FOUND,
              write ? "no such file being written (closed, or the storage agent restarted)"
                    : "no such open file (closed, or the storage agent restarted)"};
    }
    it->second.used = Clock::now();
    const std::shared_ptr<const UniqueFd> file = it->second.file;
    const std::string path = it->second.path;
    auto slot = acquire(lock, request.handle(), request.offset(), length);
    if (!slot) return {grpc::StatusCode::ABORTED, slot.error().message()};
    const std::string lease = slots[*slot].lease;
    std::byte* data = slots[*slot].memory.data();
    lock.unlock();
    // Outside the lock: other ranges are read meanwhile. The slot is this call's alone.
    Status filled;
    std::uint32_t crc = 0;
    if (write) {
      std::memset(data, 0, length);
    } else {
      filled = read_all(file->get(), data, length, request.offset());
      if (filled) crc = crc32c(std::span(data, length));
    }
    lock.lock();
    Slot* held = find_lease(lease);
    if (held == nullptr) {
      return {grpc::StatusCode::ABORTED,
              fmt::format("the lease on {} ran out before it was granted", path)};
    }
    if (filled) filled = expose(*held, length, write ? FI_REMOTE_WRITE : FI_REMOTE_READ);
    if (!filled) {
      release(*held);
      return to_grpc(Error(filled.error()).with_context(path));
    }
    reply.set_id(lease);
    reply.set_region(fabric::encode_region(held->region->remote()));
    reply.set_crc32c(crc);
    return grpc::Status::OK;
  }

  // Forgets handles nobody has used for a long time: their initiator is gone.
  void sweep() {
    const auto stale = Clock::now() - options.lease_timeout * 4;
    for (auto it = handles.begin(); it != handles.end();) {
      if (it->second.used > stale) {
        ++it;
        continue;
      }
      spdlog::warn("storage: {} was left open by a stager that went away; closed", it->second.path);
      close_handle(it->second);
      it = handles.erase(it);
    }
  }
};

}  // namespace loom::burstbuffer
