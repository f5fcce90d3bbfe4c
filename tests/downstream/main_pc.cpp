// The same through pkg-config (loom.pc): loom::hwtopo without CMake.
#include <cstdio>

#include "loom/hwtopo/load.hpp"

int main() {
  auto topology = loom::hwtopo::load_synthetic("pack:1 numa:2 core:3 pu:1");
  if (!topology) return 1;
  std::printf("cores=%zu\n", topology->cores.size());
  return 0;
}
