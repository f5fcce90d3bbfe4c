// Uses an installed Loom: a simulated node's topology (loom::hwtopo) and the fabric
// offer Loom would choose here (loom::fabric), printed for check.sh to compare.
#include <cstdio>

#include "loom/fabric/fabric.hpp"
#include "loom/hwtopo/load.hpp"

int main() {
  auto topology = loom::hwtopo::load_synthetic("pack:2 numa:2 core:4 pu:2");
  if (!topology) {
    std::fprintf(stderr, "%s\n", topology.error().to_string().c_str());
    return 1;
  }
  auto info = loom::fabric::Info::choose({"tcp;ofi_rxm", "lo"});
  if (!info) {
    std::fprintf(stderr, "%s\n", info.error().to_string().c_str());
    return 1;
  }
  std::printf("numa=%zu cores=%zu pus=%zu provider=%s\n", topology->numa_domains.size(),
              topology->cores.size(), topology->pu_count(), info->offer().provider.c_str());
  return 0;
}
