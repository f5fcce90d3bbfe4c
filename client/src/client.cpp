#include "loom/client/client.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "loom/common/duration.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/printable.hpp"
#include "loom/proto/status.hpp"

namespace loom::client {

Error Client::error(const grpc::Status& status) const {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return {ErrorCode::kUnavailable, fmt::format("the controller at {} is unreachable: {}", address,
                                                 status.error_message())};
  }
  return from_grpc(status);
}

Result<Client> connect(const std::string& option, const Config& config) {
  std::string address = option;
  if (address.empty()) {
    const char* env = std::getenv("LOOM_CONTROLLER");
    address = env != nullptr && *env != '\0' ? env : config.controller.address;
  }
  tls::Tls tls = LOOM_TRY(tls::Tls::load(config.tls, tls::Role::kClient));
  auto channel = grpc::CreateChannel(address, tls.channel());
  auto stub = v1::Controller::NewStub(channel);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 config.controller.connect_timeout)) {
    // One call that does not wait, for gRPC's reason (refused, or a TLS handshake that
    // failed): a controller over TLS and a CLI without its CA (or the other way round)
    // differ from a controller that is down only there.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::NodesRequest request;
    v1::NodesReply ignored;
    const grpc::Status why = stub->Nodes(&context, request, &ignored);
    const bool answered = why.error_code() != grpc::StatusCode::UNAVAILABLE &&
                          why.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED;
    if (answered) return Client{address, std::move(stub), std::move(tls)};  // up just now
    return make_error(ErrorCode::kUnavailable,
                      fmt::format("the controller at {} is unreachable (tried for {}, {}): {}",
                                  address, format_duration(config.controller.connect_timeout),
                                  tls.enabled() ? "over TLS" : "without TLS: tls.ca is not set",
                                  why.error_message()));
  }
  return Client{address, std::move(stub), std::move(tls)};
}

Result<v1::Caller> me() {
  v1::Caller caller;
  std::string credential = LOOM_TRY(munge_credential());
  caller.set_credential(std::move(credential));
  return caller;
}

Result<JobRef> parse_job_ref(const std::string& text) {
  auto bad = [&] {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("\"{}\" is not a job id (12, or 12_3 in an array)", text));
  };
  JobRef ref;
  const char* end = text.data() + text.size();
  auto [rest, ec] = std::from_chars(text.data(), end, ref.job);
  if (text.empty() || ec != std::errc() || ref.job == 0) return bad();
  if (rest == end) return ref;
  if (*rest != '_') return bad();
  std::uint32_t index = 0;
  auto [tail, ec2] = std::from_chars(rest + 1, end, index);
  if (ec2 != std::errc() || tail != end || index == 0) return bad();
  ref.index = index;
  return ref;
}

void warn_read_only(const std::string& read_only) {
  if (read_only.empty()) return;
  // The reason carries the store's error, which may name a path: printed as text.
  (void)std::fprintf(stderr, "loom: warning: %s; it refuses changes until it can\n",
                     printable(read_only).c_str());
}

std::string job_ref(const v1::JobInfo& job) {
  return job.array_job() != 0 ? fmt::format("{}_{}", job.array_job(), job.array_index())
                              : std::to_string(job.id());
}

Result<v1::JobRequest> job_request(const std::string& text) {
  const JobRef ref = LOOM_TRY(parse_job_ref(text));
  v1::JobRequest request;
  request.set_job(ref.job);
  if (ref.index) request.set_array_index(*ref.index);
  v1::Caller caller = LOOM_TRY(me());
  *request.mutable_caller() = std::move(caller);
  return request;
}

std::uint32_t current_umask() {
  const mode_t mask = ::umask(0);  // the only way to read it: set, then put back
  ::umask(mask);
  return static_cast<std::uint32_t>(mask);
}

}  // namespace loom::client
