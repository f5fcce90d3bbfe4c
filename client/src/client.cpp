#include "loom/client/client.hpp"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "loom/common/duration.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/printable.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/proto/status.hpp"

namespace loom::client {

Error Client::error(const grpc::Status& status) const {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return {ErrorCode::kUnavailable, fmt::format("the controller at {} is unreachable: {}", address,
                                                 status.error_message())};
  }
  return from_grpc(status);
}

namespace {

// Whether something accepts a TCP connection at "host:port" ("[v6]:port") within a second.
// A channel that fails where something listens fails at its handshake (TLS on one side
// only, a certificate of another CA), and waiting longer will not mend it.
bool accepts_tcp(const std::string& address) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), address.c_str() + colon + 1, &hints, &found) != 0) return false;
  bool accepted = false;
  for (const addrinfo* a = found; a != nullptr && !accepted; a = a->ai_next) {
    const UniqueFd fd(
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) continue;
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) {
      accepted = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof error;
      accepted = ::poll(&p, 1, 1000) == 1 &&
                 ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
    }
  }
  ::freeaddrinfo(found);
  return accepted;
}

}  // namespace

Result<Client> connect(const std::string& option, const Config& config) {
  std::string address = option;
  if (address.empty()) {
    const char* env = std::getenv("LOOM_CONTROLLER");
    address = env != nullptr && *env != '\0' ? env : config.controller.address;
  }
  tls::Tls tls = LOOM_TRY(tls::Tls::load(config.tls, tls::Role::kClient));
  auto channel = grpc::CreateChannel(address, tls.channel());
  auto stub = v1::Controller::NewStub(channel);
  // Waits for a controller that is down (restarting, say) up to connect_timeout, but not for
  // one that listens and fails the handshake.
  const auto deadline = std::chrono::system_clock::now() + config.controller.connect_timeout;
  bool handshake_failed = false;
  for (grpc_connectivity_state state = channel->GetState(true); state != GRPC_CHANNEL_READY;
       state = channel->GetState(true)) {
    handshake_failed = state == GRPC_CHANNEL_TRANSIENT_FAILURE && accepts_tcp(address);
    if (handshake_failed || !channel->WaitForStateChange(state, deadline)) break;
  }
  if (channel->GetState(false) != GRPC_CHANNEL_READY) {
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
    const std::string tried =
        handshake_failed
            ? "it listens, but the handshake failed"
            : fmt::format("tried for {}", format_duration(config.controller.connect_timeout));
    return make_error(
        ErrorCode::kUnavailable,
        fmt::format("the controller at {} is unreachable ({}, {}): {}", address, tried,
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
