#include "data_plane_io.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>

#include "loom/common/errno_text.hpp"

namespace loom::burstbuffer {

Error errno_error(std::string_view what, int e) {
  return {e == ENOSPC   ? ErrorCode::kResourceExhausted
          : e == EACCES ? ErrorCode::kPermissionDenied
                        : ErrorCode::kInternal,
          fmt::format("{}: {}", what, loom::errno_text(e))};
}

Status read_all(int fd, std::byte* data, std::size_t length, std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pread(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(errno_error("read", errno));
    if (n == 0)
      return make_error(ErrorCode::kFailedPrecondition,
                        "the file is shorter than it was when opened (changed while staged?)");
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status write_all(int fd, const std::byte* data, std::size_t length, std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(errno_error("write", errno));
    done += static_cast<std::size_t>(n);
  }
  return {};
}

std::vector<std::byte> touched(std::size_t size) {
  return std::vector<std::byte>(size);  // value-initialized: every page written once
}

Result<std::shared_ptr<fabric::Endpoint>> open_endpoint(const fabric::Options& options) {
  fabric::Info info = LOOM_TRY(fabric::Info::choose(options));
  auto f = LOOM_TRY(fabric::Fabric::open(info));
  auto domain = LOOM_TRY(fabric::Domain::open(f, info));
  return fabric::Endpoint::open(domain);
}

}  // namespace loom::burstbuffer
