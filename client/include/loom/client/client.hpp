// What every `loom` command that talks to the controller shares: finding and reaching it,
// proving who the caller is, naming jobs, and turning gRPC failures into one clear line.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"
#include "loom/proto/controller.grpc.pb.h"
#include "loom/proto/tls.hpp"

namespace loom::client {

struct Client {
  std::string address;
  std::unique_ptr<v1::Controller::Stub> stub;
  tls::Tls tls;  // tls.ca alone: what it checks the controller (and storage agents) with

  // A failed call as one line: the controller's own message, or that it is unreachable.
  Error error(const grpc::Status& status) const;
};

// --controller's help, for every command that reaches the controller.
inline constexpr const char* kControllerHelp =
    "The controller's HOST:PORT (default: $LOOM_CONTROLLER, then controller.address)";

// The controller named by --controller (`option`), else LOOM_CONTROLLER, else
// controller.address, once it accepts a connection: tried for controller.connect_timeout,
// so that a controller restarting does not fail a command. Calls are not retried after
// that: a submission must never be made twice. Over TLS when tls.ca is set: the controller
// must show a certificate that CA signed for the address dialled.
Result<Client> connect(const std::string& option, const Config& config);

// This process, as a fresh Munge credential proves it.
Result<v1::Caller> me();

// This process's umask, sent with what Loom writes for the user (a job's files, `loom
// stage` uploads) so that those files get the modes the user's own would.
std::uint32_t current_umask();

// A reply's read_only (JobInfo, ListReply, NodesReply) as a warning line on stderr, so
// that the listing on stdout stays as it is (--json included); nothing when it is empty.
void warn_read_only(const std::string& read_only);

// "12" or, for an array's element, "12_3".
struct JobRef {
  std::uint64_t job = 0;
  std::optional<std::uint32_t> index;
};
Result<JobRef> parse_job_ref(const std::string& text);
std::string job_ref(const v1::JobInfo& job);

// The request naming one job, as this user.
Result<v1::JobRequest> job_request(const std::string& text);

}  // namespace loom::client
