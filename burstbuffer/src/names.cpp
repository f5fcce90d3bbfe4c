#include "loom/burstbuffer/names.hpp"

#include <fmt/format.h>

namespace loom::burstbuffer {

namespace fs = std::filesystem;

fs::path buffer_image(const fs::path& device, const std::string& slice) {
  return device / ".loom" / fmt::format("bb_{}.img", slice);
}
fs::path buffer_mount(const fs::path& device, const std::string& slice) {
  return device / fmt::format("bb_{}", slice);
}
fs::path slice_image(const fs::path& device, std::uint64_t job) {
  return device / ".loom" / fmt::format("job_{}.img", job);
}
fs::path slice_mount(const fs::path& device, std::uint64_t job) {
  return device / fmt::format("job_{}", job);
}

}  // namespace loom::burstbuffer
