// This host's name, as the kernel has it (gethostname): what loomd calls its node by
// default and names its host to mpirun.
#pragma once

#include <unistd.h>

#include <array>
#include <string>

namespace loom {

inline std::string host_name() {
  std::array<char, 256> name{};  // HOST_NAME_MAX is 64; the last byte stays the terminator
  ::gethostname(name.data(), name.size() - 1);
  return name.data();
}

}  // namespace loom
