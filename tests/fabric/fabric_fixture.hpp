// Endpoints for fabric tests on the providers that run here: tcp;ofi_rxm on loopback, and
// shm. Each test opens its own fabric, domain and endpoint per side.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "loom/fabric/fabric.hpp"

namespace loom::fabric::testing {

inline Options options_for(const std::string& provider) {
  return {provider, provider == "tcp;ofi_rxm" ? "lo" : ""};
}

inline Result<std::shared_ptr<Endpoint>> open_endpoint(const std::string& provider) {
  Info info = LOOM_TRY(Info::choose(options_for(provider)));
  std::shared_ptr<Fabric> fabric = LOOM_TRY(Fabric::open(info));
  std::shared_ptr<Domain> domain = LOOM_TRY(Domain::open(fabric, info));
  return Endpoint::open(domain);
}

// A buffer filled with a pattern that differs at every byte position and per seed, and
// touched, so that registration and transfers meet real pages.
inline std::vector<std::byte> pattern(std::size_t bytes, unsigned seed) {
  std::vector<std::byte> out(bytes);
  std::uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (std::size_t i = 0; i < bytes; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<std::byte>(x);
  }
  return out;
}

constexpr std::uint64_t kAllAccess = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;

}  // namespace loom::fabric::testing
