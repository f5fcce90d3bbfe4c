#include "loom/fabric/fabric.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace loom::fabric {

namespace {

constexpr std::uint32_t kApiVersion = FI_VERSION(1, 17);

// The mr_mode bits Loom honours; a provider that asks for another is not offered.
// FI_MR_PROV_KEY is offered only to providers that cannot do without it (verbs): where a
// provider lets the caller choose, Loom's random keys are the stronger ones (tcp's and
// shm's own are small and sequential, so a peer guesses them).
constexpr std::uint64_t kHonouredMrModes =
    FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_ENDPOINT;

constexpr std::array<std::string_view, 2> kFallback = {"verbs;ofi_rxm", "tcp;ofi_rxm"};

struct InfoList {
  fi_info* head = nullptr;
  ~InfoList() {
    if (head != nullptr) fi_freeinfo(head);
  }
};

Result<fi_info*> query_modes(const std::string& provider, const std::string& domain,
                             std::uint64_t mr_modes, InfoList& list) {
  std::unique_ptr<fi_info, void (*)(fi_info*)> hints(fi_allocinfo(), fi_freeinfo);
  if (!hints) return make_error(ErrorCode::kResourceExhausted, "fi_allocinfo: out of memory");
  hints->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->ep_attr->type = FI_EP_RDM;
  hints->domain_attr->mr_mode = static_cast<int>(mr_modes);
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->domain_attr->data_progress = FI_PROGRESS_MANUAL;
  // A write completes once its bytes are in the target's memory, not when they have left
  // ours: staging reports a dataset present on the strength of it.
  hints->tx_attr->op_flags = FI_DELIVERY_COMPLETE;
  // fi_freeinfo frees these strings with the hints.
  if (!provider.empty()) hints->fabric_attr->prov_name = strdup(provider.c_str());
  if (!domain.empty()) hints->domain_attr->name = strdup(domain.c_str());
  const int rc = fi_getinfo(kApiVersion, nullptr, nullptr, 0, hints.get(), &list.head);
  if (rc == -FI_ENODATA) return static_cast<fi_info*>(nullptr);
  if (rc != 0) return std::unexpected(fi_error("fi_getinfo", rc));
  return list.head;
}

// The provider's offers with Loom choosing keys, or, where it insists on its own keys,
// with those.
Result<fi_info*> query(const std::string& provider, const std::string& domain, InfoList& list) {
  const fi_info* own_keys = LOOM_TRY(query_modes(provider, domain, kHonouredMrModes, list));
  if (own_keys != nullptr) return list.head;
  return query_modes(provider, domain, kHonouredMrModes | FI_MR_PROV_KEY, list);
}

bool is_loopback(const fi_info* info) {
  const char* name = info->domain_attr->name;
  return name != nullptr && std::strcmp(name, "lo") == 0;
}

Offer offer_of(const fi_info* info) {
  return {info->fabric_attr->prov_name != nullptr ? info->fabric_attr->prov_name : "",
          info->fabric_attr->name != nullptr ? info->fabric_attr->name : "",
          info->domain_attr->name != nullptr ? info->domain_attr->name : "",
          info->ep_attr->type == FI_EP_RDM ? "FI_EP_RDM" : "other",
          mr_mode_names(static_cast<std::uint64_t>(info->domain_attr->mr_mode))};
}

// A key for a registration that a peer will use: random, so that knowing one lease's key
// (or any number of them) says nothing of another's. Fits the domain's mr_key_size.
std::uint64_t random_key(std::size_t key_size) {
  std::uint64_t key = 0;
  while (::getrandom(&key, sizeof(key), 0) != sizeof(key)) {
  }
  if (key_size < sizeof(key)) key &= (std::uint64_t{1} << (8 * key_size)) - 1;
  return key;
}

}  // namespace

Error fi_error(std::string_view call, int code) {
  const int positive = code < 0 ? -code : code;
  ErrorCode kind = ErrorCode::kInternal;
  switch (positive) {
    case FI_EAGAIN:
      kind = ErrorCode::kUnavailable;
      break;
    case FI_ENODATA:
    case FI_ENOENT:
      kind = ErrorCode::kNotFound;
      break;
    case FI_ETIMEDOUT:
      kind = ErrorCode::kDeadlineExceeded;
      break;
    case FI_ECANCELED:
      kind = ErrorCode::kCancelled;
      break;
    case FI_EACCES:
    case FI_EPERM:
      kind = ErrorCode::kPermissionDenied;
      break;
    case FI_EINVAL:
    case FI_EKEYREJECTED:
      kind = ErrorCode::kInvalidArgument;
      break;
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_EHOSTUNREACH:
    case FI_ENOTCONN:
    case FI_EIO:
      kind = ErrorCode::kUnavailable;
      break;
    default:
      break;
  }
  return {kind, fmt::format("{}: {}", call, fi_strerror(positive))};
}

std::vector<std::string> mr_mode_names(std::uint64_t mode) {
  static constexpr auto kBits = std::to_array<std::pair<std::uint64_t, std::string_view>>({
      {FI_MR_LOCAL, "FI_MR_LOCAL"},
      {FI_MR_RAW, "FI_MR_RAW"},
      {FI_MR_VIRT_ADDR, "FI_MR_VIRT_ADDR"},
      {FI_MR_ALLOCATED, "FI_MR_ALLOCATED"},
      {FI_MR_PROV_KEY, "FI_MR_PROV_KEY"},
      {FI_MR_MMU_NOTIFY, "FI_MR_MMU_NOTIFY"},
      {FI_MR_RMA_EVENT, "FI_MR_RMA_EVENT"},
      {FI_MR_ENDPOINT, "FI_MR_ENDPOINT"},
      {FI_MR_HMEM, "FI_MR_HMEM"},
      {FI_MR_COLLECTIVE, "FI_MR_COLLECTIVE"},
  });
  std::vector<std::string> names;
  for (auto [bit, name] : kBits) {
    if (mode & bit) names.emplace_back(name);
  }
  return names;
}

std::span<const std::string_view> fallback_order() { return kFallback; }

Result<std::vector<Offer>> list_offers() {
  std::vector<Offer> offers;
  // Both kinds of provider: those that let Loom pick keys, and those that insist on theirs.
  InfoList choosing, insisting;
  LOOM_TRY(query_modes("", "", kHonouredMrModes, choosing));
  LOOM_TRY(query_modes("", "", kHonouredMrModes | FI_MR_PROV_KEY, insisting));
  auto add = [&](const fi_info* info) {
    // Providers list one offer per protocol variant; they read the same to a user.
    Offer offer = offer_of(info);
    auto same = [&](const Offer& o) {
      return o.provider == offer.provider && o.fabric == offer.fabric && o.domain == offer.domain &&
             o.mr_mode == offer.mr_mode;
    };
    if (std::ranges::none_of(offers, same)) offers.push_back(std::move(offer));
  };
  for (const fi_info* info = choosing.head; info != nullptr; info = info->next) add(info);
  for (const fi_info* info = insisting.head; info != nullptr; info = info->next) add(info);
  return offers;
}

const fi_info* pick_offer(const fi_info* head, std::string_view interface) {
  auto rank = [](const fi_info* info) {
    int r = 0;
    if (is_loopback(info)) r += 4;
    if (info->addr_format == FI_SOCKADDR_IN6 && info->src_addr != nullptr &&
        info->src_addrlen >= sizeof(sockaddr_in6)) {
      r += 1;
      if (IN6_IS_ADDR_LINKLOCAL(&static_cast<const sockaddr_in6*>(info->src_addr)->sin6_addr))
        r += 2;
    }
    return r;
  };
  const fi_info* chosen = nullptr;
  for (const fi_info* info = head; info != nullptr; info = info->next) {
    // Layered providers (ofi_rxm) do not filter on the domain hint: filter here.
    if (!interface.empty() &&
        (info->domain_attr->name == nullptr || interface != info->domain_attr->name))
      continue;
    if (chosen == nullptr || rank(info) < rank(chosen)) chosen = info;
  }
  return chosen;
}

Result<Info> Info::choose(const Options& options) {
  std::vector<std::string> providers;
  if (!options.provider.empty()) {
    providers.push_back(options.provider);
  } else if (const char* env = std::getenv("FI_PROVIDER"); env != nullptr && *env != '\0') {
    providers.emplace_back(env);
  } else {
    providers.assign(kFallback.begin(), kFallback.end());
  }
  for (const std::string& provider : providers) {
    InfoList list;
    const fi_info* head = LOOM_TRY(query(provider, options.interface, list));
    const fi_info* chosen = pick_offer(head, options.interface);
    if (chosen == nullptr) continue;
    fi_info* copy = fi_dupinfo(chosen);
    if (copy == nullptr)
      return make_error(ErrorCode::kResourceExhausted, "fi_dupinfo: out of memory");
    return Info(copy);
  }
  return make_error(
      ErrorCode::kNotFound,
      fmt::format("no fabric provider offers RDM endpoints with RMA for provider {}{} "
                  "(`loom fabric info` lists what this machine offers)",
                  fmt::join(providers, " or "),
                  options.interface.empty() ? "" : " on interface " + options.interface));
}

Offer Info::offer() const { return offer_of(info_.get()); }

Result<Info> Info::duplicate() const {
  fi_info* copy = fi_dupinfo(info_.get());
  if (copy == nullptr)
    return make_error(ErrorCode::kResourceExhausted, "fi_dupinfo: out of memory");
  return Info(copy);
}

Result<std::shared_ptr<Fabric>> Fabric::open(const Info& info) {
  auto fabric = std::make_shared<Fabric>();
  fid_fabric* raw = nullptr;
  if (int rc = fi_fabric(info.get()->fabric_attr, &raw, nullptr); rc != 0)
    return std::unexpected(fi_error("fi_fabric", rc));
  fabric->fabric_.reset(raw);
  return fabric;
}

Result<std::shared_ptr<Domain>> Domain::open(std::shared_ptr<Fabric> fabric, const Info& info) {
  auto domain = std::make_shared<Domain>();
  Info copy = LOOM_TRY(info.duplicate());
  domain->info_ = std::make_shared<const Info>(std::move(copy));
  fid_domain* raw = nullptr;
  auto* attributes = const_cast<fi_info*>(domain->info_->get());  // fi_domain reads it only
  if (int rc = fi_domain(fabric->get(), attributes, &raw, nullptr); rc != 0)
    return std::unexpected(fi_error("fi_domain", rc));
  domain->domain_.reset(raw);
  domain->fabric_ = std::move(fabric);
  return domain;
}

std::size_t Domain::max_message() const { return info_->get()->ep_attr->max_msg_size; }

Result<std::shared_ptr<CompletionQueue>> CompletionQueue::open(std::shared_ptr<Domain> domain,
                                                               std::size_t size) {
  auto cq = std::make_shared<CompletionQueue>();
  fi_cq_attr attr{};
  attr.size = size;
  attr.format = FI_CQ_FORMAT_CONTEXT;
  attr.wait_obj = FI_WAIT_NONE;  // progress is driven by polling
  fid_cq* raw = nullptr;
  if (int rc = fi_cq_open(domain->get(), &attr, &raw, nullptr); rc != 0)
    return std::unexpected(fi_error("fi_cq_open", rc));
  cq->cq_.reset(raw);
  cq->domain_ = std::move(domain);
  return cq;
}

Result<std::shared_ptr<AddressVector>> AddressVector::open(std::shared_ptr<Domain> domain) {
  auto av = std::make_shared<AddressVector>();
  fi_av_attr attr{};
  attr.type = FI_AV_TABLE;
  fid_av* raw = nullptr;
  if (int rc = fi_av_open(domain->get(), &attr, &raw, nullptr); rc != 0)
    return std::unexpected(fi_error("fi_av_open", rc));
  av->av_.reset(raw);
  av->domain_ = std::move(domain);
  return av;
}

Result<fi_addr_t> AddressVector::insert(std::span<const std::byte> name) {
  fi_addr_t address = FI_ADDR_UNSPEC;
  const int rc = fi_av_insert(av_.get(), name.data(), 1, &address, 0, nullptr);
  if (rc != 1) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("fi_av_insert: the peer's endpoint name ({} bytes) was refused", name.size()));
  }
  return address;
}

Result<std::shared_ptr<Endpoint>> Endpoint::open(std::shared_ptr<Domain> domain) {
  auto ep = std::make_shared<Endpoint>();
  ep->cq_ = LOOM_TRY(CompletionQueue::open(domain, 1024));
  ep->av_ = LOOM_TRY(AddressVector::open(domain));
  fid_ep* raw = nullptr;
  auto* info = const_cast<fi_info*>(domain->info().get());  // fi_endpoint does not modify it
  if (int rc = fi_endpoint(domain->get(), info, &raw, nullptr); rc != 0)
    return std::unexpected(fi_error("fi_endpoint", rc));
  ep->ep_.reset(raw);
  if (int rc = fi_ep_bind(raw, &ep->cq_->get()->fid, FI_TRANSMIT | FI_RECV); rc != 0) {
    return std::unexpected(fi_error("fi_ep_bind(cq)", rc));
  }
  if (int rc = fi_ep_bind(raw, &ep->av_->get()->fid, 0); rc != 0)
    return std::unexpected(fi_error("fi_ep_bind(av)", rc));
  if (std::string_view(info->fabric_attr->prov_name).starts_with("shm")) {
    // shm names its region in /dev/shm after the pid ("PID:0:0") unless told otherwise. A
    // process killed with SIGKILL leaves that file behind, and a later process given the
    // same pid then fails fi_enable with EBUSY. A name no other process can have avoids it.
    static std::atomic<std::uint64_t> sequence{0};
    std::string name = fmt::format("loom-{}-{}-{:x}", ::getpid(), sequence.fetch_add(1),
                                   std::chrono::steady_clock::now().time_since_epoch().count());
    if (int rc = fi_setname(&raw->fid, name.data(), name.size() + 1); rc != 0)
      return std::unexpected(fi_error("fi_setname", rc));
  }
  if (int rc = fi_enable(raw); rc != 0) return std::unexpected(fi_error("fi_enable", rc));
  std::size_t length = 0;
  fi_getname(&raw->fid, nullptr, &length);  // -FI_ETOOSMALL, with the length
  ep->name_.resize(length);
  if (int rc = fi_getname(&raw->fid, ep->name_.data(), &length); rc != 0)
    return std::unexpected(fi_error("fi_getname", rc));
  ep->name_.resize(length);
  ep->domain_ = std::move(domain);
  return ep;
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::register_memory(const Endpoint& endpoint,
                                                                    void* buffer,
                                                                    std::size_t length,
                                                                    std::uint64_t access) {
  const std::shared_ptr<Domain>& domain = endpoint.domain();
  const std::uint64_t mode = domain->mr_mode();
  auto region = std::unique_ptr<MemoryRegion>(new MemoryRegion());
  // Without FI_MR_PROV_KEY the requester picks keys: random ones, drawn again in the
  // unlikely case that one is taken in the domain.
  const std::size_t key_size = domain->info().get()->domain_attr->mr_key_size;
  fid_mr* raw = nullptr;
  for (int attempt = 0;; ++attempt) {
    const std::uint64_t requested = (mode & FI_MR_PROV_KEY) ? 0 : random_key(key_size);
    const int rc = fi_mr_reg(domain->get(), buffer, length, access, 0, requested, 0, &raw, nullptr);
    if (rc == 0) break;
    if (rc != -FI_ENOKEY || attempt == 8) return std::unexpected(fi_error("fi_mr_reg", rc));
  }
  region->mr_.reset(raw);
  if (mode & FI_MR_ENDPOINT) {
    if (int rc = fi_mr_bind(raw, &endpoint.get()->fid, 0); rc != 0)
      return std::unexpected(fi_error("fi_mr_bind", rc));
    if (int rc = fi_mr_enable(raw); rc != 0) return std::unexpected(fi_error("fi_mr_enable", rc));
  }
  region->domain_ = domain;
  region->buffer_ = buffer;
  region->length_ = length;
  return region;
}

std::uint64_t MemoryRegion::remote_address(std::size_t offset) const {
  if (domain_->mr_mode() & FI_MR_VIRT_ADDR)
    return reinterpret_cast<std::uint64_t>(buffer_) + offset;
  return offset;
}

}  // namespace loom::fabric
