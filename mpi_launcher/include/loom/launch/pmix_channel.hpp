// The channel between an agent and a job's PMIx server on its node (proto/pmix.proto): a
// socketpair the agent makes, on which each message is a 4-byte little-endian length and
// then its bytes. The server runs as the job's user, so what it writes is bounded and
// parsed like any user's input.
#pragma once

#include <google/protobuf/message_lite.h>

#include <chrono>
#include <cstddef>

#include "loom/common/error.hpp"

namespace loom::launch {

// The largest message either side takes (a node's ranks' environments).
inline constexpr std::size_t kMaxPmixMessage = std::size_t{1} << 20;

Status write_message(int fd, const google::protobuf::MessageLite& message);
// One whole message. kUnavailable at the other side's close before a message begins;
// kDeadlineExceeded when `timeout` passes first (negative: none); kInvalidArgument for a
// length over kMaxPmixMessage or bytes that do not parse.
Status read_message(int fd, google::protobuf::MessageLite& message,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

}  // namespace loom::launch
