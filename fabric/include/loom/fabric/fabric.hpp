// libfabric, owned: one move-only owner per handle, children keeping their parents alive
// (endpoint -> domain -> fabric; endpoint -> its completion queue and address vector), so
// teardown follows fabtests' ft_close_fids order whatever order the owners are dropped in.
//
// Thread safety: domains are opened FI_THREAD_DOMAIN: one thread at a time per domain,
// progress driven explicitly by whoever reads the completion queue (the engine).
#pragma once

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::fabric {

// What to open: the provider, and the fabric interface (libfabric's domain name, e.g.
// "eth0" or "lo") whose address the endpoint binds. An empty provider means FI_PROVIDER,
// else the fallback order "verbs;ofi_rxm", "tcp;ofi_rxm"; an empty interface means the
// first the provider lists that is not loopback, else loopback.
struct Options {
  std::string provider;
  std::string interface;
};

// One RDM + RMA offer of a provider, as `loom fabric info` lists them.
struct Offer {
  std::string provider;              // "tcp;ofi_rxm", "shm", "verbs;ofi_rxm"
  std::string fabric;                // "127.0.0.1/32"
  std::string domain;                // "lo"
  std::string ep_type;               // "FI_EP_RDM"
  std::vector<std::string> mr_mode;  // the FI_MR_* bits the provider asks for
};

// The order in which providers are tried when none is named.
std::span<const std::string_view> fallback_order();

// Every RDM endpoint with RMA this machine offers.
Result<std::vector<Offer>> list_offers();

// Of a provider's offers (a list), the one to use: on `interface` when one is named, else
// the first that is not loopback. On the same terms an IPv4 address goes before an IPv6
// one, and a link-local IPv6 address (fe80::/10: it needs a scope and reaches no other
// host; a veth or a bridge has nothing else) after any other. Null when none is on
// `interface`.
const fi_info* pick_offer(const fi_info* head, std::string_view interface);

// An fi_info chosen for options; owns it.
class Info {
 public:
  static Result<Info> choose(const Options& options);
  Result<Info> duplicate() const;
  const fi_info* get() const { return info_.get(); }
  Offer offer() const;
  std::uint64_t mr_mode() const { return info_->domain_attr->mr_mode; }

 private:
  struct Free {
    void operator()(fi_info* info) const { fi_freeinfo(info); }
  };
  explicit Info(fi_info* info) : info_(info) {}
  std::unique_ptr<fi_info, Free> info_;
};

namespace detail {
template <typename T>
struct Close {
  void operator()(T* fid) const { fi_close(&fid->fid); }  // errors at close are unactionable
};
template <typename T>
using Owned = std::unique_ptr<T, Close<T>>;
}  // namespace detail

class Domain;

class Fabric {
 public:
  static Result<std::shared_ptr<Fabric>> open(const Info& info);
  fid_fabric* get() const { return fabric_.get(); }

 private:
  detail::Owned<fid_fabric> fabric_;
};

class Domain {
 public:
  static Result<std::shared_ptr<Domain>> open(std::shared_ptr<Fabric> fabric, const Info& info);
  fid_domain* get() const { return domain_.get(); }
  const Info& info() const { return *info_; }
  std::uint64_t mr_mode() const { return info_->mr_mode(); }
  std::size_t max_message() const;

 private:
  std::shared_ptr<Fabric> fabric_;  // outlives the domain
  std::shared_ptr<const Info> info_;
  detail::Owned<fid_domain> domain_;
  friend class Endpoint;
};

class CompletionQueue {
 public:
  static Result<std::shared_ptr<CompletionQueue>> open(std::shared_ptr<Domain> domain,
                                                       std::size_t size);
  fid_cq* get() const { return cq_.get(); }

 private:
  std::shared_ptr<Domain> domain_;
  detail::Owned<fid_cq> cq_;
};

class AddressVector {
 public:
  static Result<std::shared_ptr<AddressVector>> open(std::shared_ptr<Domain> domain);
  // Inserts a peer's endpoint name (from Endpoint::name on its side).
  Result<fi_addr_t> insert(std::span<const std::byte> name);
  fid_av* get() const { return av_.get(); }

 private:
  std::shared_ptr<Domain> domain_;
  detail::Owned<fid_av> av_;
};

// An RDM endpoint bound to one completion queue (transmit) and one address vector.
class Endpoint {
 public:
  static Result<std::shared_ptr<Endpoint>> open(std::shared_ptr<Domain> domain);
  fid_ep* get() const { return ep_.get(); }
  const std::shared_ptr<Domain>& domain() const { return domain_; }
  CompletionQueue& cq() const { return *cq_; }
  AddressVector& av() const { return *av_; }
  // This endpoint's address, to hand to peers.
  const std::vector<std::byte>& name() const { return name_; }

  // Operation contexts the provider may still hold (an engine torn down after a timeout):
  // freed only once the endpoint is closed, never under the provider.
  void keep_until_closed(std::vector<fi_context2> contexts) {
    abandoned_.push_back(std::move(contexts));
  }

 private:
  std::shared_ptr<Domain> domain_;
  std::shared_ptr<CompletionQueue> cq_;
  std::shared_ptr<AddressVector> av_;
  std::vector<std::vector<fi_context2>> abandoned_;
  detail::Owned<fid_ep> ep_;  // declared after what it may still use: closed first
  std::vector<std::byte> name_;
};

// Where a peer may read or write: what a region's owner sends to the other side.
struct RemoteRegion {
  std::uint64_t address = 0;  // virtual address under FI_MR_VIRT_ADDR, else 0-based offset
  std::uint64_t key = 0;
  std::uint64_t length = 0;
  friend bool operator==(const RemoteRegion&, const RemoteRegion&) = default;
};

// Registered memory. The caller owns the buffer and keeps it alive while the region
// exists and while any operation on it is in flight.
class MemoryRegion {
 public:
  // access: FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE. Under FI_MR_ENDPOINT the
  // region is bound to `endpoint`. Without FI_MR_PROV_KEY, Loom picks the key: random
  // within the domain's mr_key_size, so that no peer can guess one. Register for remote
  // access only what a peer is meant to reach, and only while it is meant to.
  static Result<std::unique_ptr<MemoryRegion>> register_memory(const Endpoint& endpoint,
                                                               void* buffer, std::size_t length,
                                                               std::uint64_t access);
  void* descriptor() const { return fi_mr_desc(mr_.get()); }
  std::uint64_t key() const { return fi_mr_key(mr_.get()); }
  std::byte* data() const { return static_cast<std::byte*>(buffer_); }
  std::size_t length() const { return length_; }
  // How a peer names byte `offset` of this region in fi_read/fi_write.
  std::uint64_t remote_address(std::size_t offset) const;
  RemoteRegion remote() const { return {remote_address(0), key(), length_}; }

  // Registrations alive in this process: what callers registered, so that a test can see
  // that nobody registers behind their back.
  static std::size_t live_count() { return live_.load(); }

  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  ~MemoryRegion() { --live_; }

 private:
  MemoryRegion() { ++live_; }
  static inline std::atomic<std::size_t> live_{0};
  std::shared_ptr<Domain> domain_;
  void* buffer_ = nullptr;
  std::size_t length_ = 0;
  detail::Owned<fid_mr> mr_;
};

// Names every FI_MR_* bit set in mode, e.g. {"FI_MR_VIRT_ADDR"}.
std::vector<std::string> mr_mode_names(std::uint64_t mode);

// Turns a libfabric return code into an Error naming the call: "fi_write: Connection reset".
Error fi_error(std::string_view call, int code);

}  // namespace loom::fabric
