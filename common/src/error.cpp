#include "loom/common/error.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <ranges>

namespace loom {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::kCancelled:
      return "cancelled";
    case ErrorCode::kUnknown:
      return "unknown";
    case ErrorCode::kInvalidArgument:
      return "invalid argument";
    case ErrorCode::kDeadlineExceeded:
      return "deadline exceeded";
    case ErrorCode::kNotFound:
      return "not found";
    case ErrorCode::kAlreadyExists:
      return "already exists";
    case ErrorCode::kPermissionDenied:
      return "permission denied";
    case ErrorCode::kResourceExhausted:
      return "resource exhausted";
    case ErrorCode::kFailedPrecondition:
      return "failed precondition";
    case ErrorCode::kAborted:
      return "aborted";
    case ErrorCode::kOutOfRange:
      return "out of range";
    case ErrorCode::kUnimplemented:
      return "unimplemented";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kDataLoss:
      return "data loss";
    case ErrorCode::kUnauthenticated:
      return "unauthenticated";
  }
  return "unknown";
}

bool is_retryable(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnavailable:
    case ErrorCode::kAborted:
    case ErrorCode::kDeadlineExceeded:
    case ErrorCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

std::string Error::to_string() const {
  std::string line;
  for (const std::string& what : std::ranges::reverse_view(context_)) {  // outermost first
    line += what;
    line += ": ";
  }
  line += message_;
  return line;
}

namespace detail {

void check_failed(const char* condition, const char* file, int line, std::string_view message) {
  (void)std::fprintf(stderr, "bug: check failed at %s:%d: %s: %.*s\n", file, line, condition,
                     static_cast<int>(message.size()), message.data());
  // Once log::init has run, the log may go elsewhere too (a file, the journal): say it there.
  if (auto logger = spdlog::default_logger(); logger && !logger->name().empty()) {
    logger->critical("bug: check failed at {}:{}: {}: {}", file, line, condition, message);
    logger->flush();
  }
  std::abort();
}

}  // namespace detail
}  // namespace loom
