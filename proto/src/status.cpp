#include "loom/proto/status.hpp"

#include <array>
#include <utility>

namespace loom {

namespace {

constexpr std::array<std::pair<ErrorCode, grpc::StatusCode>, 14> kCodes{{
    {ErrorCode::kCancelled, grpc::StatusCode::CANCELLED},
    {ErrorCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
    {ErrorCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
    {ErrorCode::kNotFound, grpc::StatusCode::NOT_FOUND},
    {ErrorCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
    {ErrorCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
    {ErrorCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
    {ErrorCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
    {ErrorCode::kAborted, grpc::StatusCode::ABORTED},
    {ErrorCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
    {ErrorCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
    {ErrorCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
    {ErrorCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
    {ErrorCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
}};

}  // namespace

grpc::Status to_grpc(const Error& error) {
  for (const auto& [ours, theirs] : kCodes) {
    if (ours == error.code()) return {theirs, error.to_string()};
  }
  return {grpc::StatusCode::INTERNAL, error.to_string()};
}

Error from_grpc(const grpc::Status& status) {
  for (const auto& [ours, theirs] : kCodes) {
    if (theirs == status.error_code()) return {ours, status.error_message()};
  }
  return {ErrorCode::kInternal, status.error_message()};
}

}  // namespace loom
