#include "loom/launch/hosts.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <netdb.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "loom/common/errno_text.hpp"

namespace loom::launch {

namespace {

// Why `host` does not resolve (getaddrinfo's words), or "" when it does.
std::string resolve_error(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  for (int attempt = 0;; ++attempt) {
    addrinfo* found = nullptr;
    const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (found != nullptr) ::freeaddrinfo(found);
    if (status == 0) return "";
    if (status != EAI_AGAIN || attempt == 3)
      return status == EAI_SYSTEM ? loom::errno_text(errno) : ::gai_strerror(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

Status check_resolvable(const std::vector<NodeRanks>& nodes) {
  for (std::size_t i = 1; i < nodes.size(); ++i) {
    if (const std::string failed = resolve_error(nodes[i].node); !failed.empty()) {
      return make_error(ErrorCode::kFailedPrecondition,
                        fmt::format("{} does not resolve here ({}): an MPI job needs every "
                                    "node's name to be its resolvable hostname",
                                    nodes[i].node, failed));
    }
  }
  return {};
}

std::string interface_network(const std::string& name) {
  if (name.empty()) return "";
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string network;
  for (ifaddrs* a = list; a != nullptr && network.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_netmask == nullptr || a->ifa_addr->sa_family != AF_INET ||
        name != a->ifa_name)
      continue;
    const std::uint32_t address =
        ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
    const std::uint32_t mask =
        ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_netmask)->sin_addr.s_addr);
    const std::uint32_t net = address & mask;
    network = fmt::format("{}.{}.{}.{}/{}", net >> 24, (net >> 16) & 255, (net >> 8) & 255,
                          net & 255, std::popcount(mask));
  }
  ::freeifaddrs(list);
  return network;
}

}  // namespace loom::launch
