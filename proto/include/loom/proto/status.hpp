// Loom's errors across gRPC, both ways: the code mapped to its gRPC counterpart and back,
// the message (with its context) carried as is. Every service and client uses these.
#pragma once

#include <grpcpp/grpcpp.h>

#include "loom/common/error.hpp"

namespace loom {

grpc::Status to_grpc(const Error& error);
Error from_grpc(const grpc::Status& status);

}  // namespace loom
