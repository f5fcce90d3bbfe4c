#include "loom/launch/pmix_channel.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <optional>
#include <string>

#include "loom/common/errno_text.hpp"

namespace loom::launch {

namespace {

using Clock = std::chrono::steady_clock;

// Fills `out` whole, or says why not: the peer's close, the deadline, an error. `starts`:
// the peer may close cleanly before it.
Status read_exactly(int fd, char* out, std::size_t size, std::optional<Clock::time_point> deadline,
                    bool starts) {
  for (std::size_t done = 0; done < size;) {
    if (deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      pollfd p{fd, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0)
        return make_error(ErrorCode::kDeadlineExceeded, "the PMIx server did not answer in time");
    }
    const ssize_t n = ::read(fd, out + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return make_error(ErrorCode::kUnavailable,
                        fmt::format("reading the PMIx channel: {}", errno_text(errno)));
    if (n == 0) {
      return make_error(ErrorCode::kUnavailable, starts && done == 0
                                                     ? "the PMIx channel is closed"
                                                     : "the PMIx channel closed mid-message");
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

Status write_message(int fd, const google::protobuf::MessageLite& message) {
  const std::string body = message.SerializeAsString();
  if (body.size() > kMaxPmixMessage)
    return make_error(
        ErrorCode::kResourceExhausted,
        fmt::format("a PMIx message of {} bytes is over {}", body.size(), kMaxPmixMessage));
  const auto size = static_cast<std::uint32_t>(body.size());
  std::string frame{static_cast<char>(size & 0xff), static_cast<char>((size >> 8) & 0xff),
                    static_cast<char>((size >> 16) & 0xff), static_cast<char>(size >> 24)};
  frame += body;
  for (std::size_t done = 0; done < frame.size();) {
    // MSG_NOSIGNAL: a peer gone is an error here, not SIGPIPE for the whole process.
    const ssize_t n = ::send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return make_error(ErrorCode::kUnavailable,
                        fmt::format("writing the PMIx channel: {}", errno_text(errno)));
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status read_message(int fd, google::protobuf::MessageLite& message,
                    std::chrono::milliseconds timeout) {
  std::optional<Clock::time_point> deadline;
  if (timeout.count() >= 0) deadline = Clock::now() + timeout;
  std::array<unsigned char, 4> head{};
  LOOM_TRY(read_exactly(fd, reinterpret_cast<char*>(head.data()), head.size(), deadline, true));
  const std::size_t size =
      head[0] | (head[1] << 8) | (head[2] << 16) | (static_cast<std::size_t>(head[3]) << 24);
  if (size > kMaxPmixMessage)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("a PMIx message of {} bytes is over {}", size, kMaxPmixMessage));
  std::string body(size, '\0');
  LOOM_TRY(read_exactly(fd, body.data(), size, deadline, false));
  if (!message.ParseFromString(body))
    return make_error(ErrorCode::kInvalidArgument, "a PMIx message does not parse");
  return {};
}

}  // namespace loom::launch
