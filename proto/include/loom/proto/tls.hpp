// Every gRPC channel's security, from tls.ca, tls.cert and tls.key: one configuration for
// the controller's listener, a storage agent's, the agents' and stagers' channels and the
// CLI's. With a CA, every channel runs TLS 1.2 or later: a client checks that its server
// holds a certificate the CA signed for the address it dialled; a server asks its client
// for one, and a daemon's call (an agent registering, a stager acting for a job's user) is
// taken only from a client that showed one. Users' calls come without a certificate: Munge
// proves who they are. Without a CA, gRPC runs plain.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"

namespace loom::tls {

// What a process presents: the daemons a certificate of their host; the CLI (and loom
// stage, loom-rsh) only the CA, to check their server with.
enum class Role { kDaemon, kClient };

class Tls {
 public:
  Tls() = default;  // plain

  // Reads the files tls.* name. Plain when tls.ca is empty (and then tls.cert and tls.key
  // must be empty too). A daemon with a CA needs tls.cert and tls.key, the key readable by
  // its owner alone. Errors name the key and the file.
  static Result<Tls> load(const Config::Tls& files, Role role);

  bool enabled() const { return channel_ != nullptr; }
  std::shared_ptr<grpc::ChannelCredentials> channel() const;
  std::shared_ptr<grpc::ServerCredentials> server() const;

  // Whether the caller is a host of the cluster: it showed a certificate the CA signed
  // (TLS), or TLS is off and nothing but Munge tells hosts from users.
  bool from_cluster_host(const grpc::ServerContextBase& context) const;

  // "TLS (CA /etc/loom/ca.pem, certificate /etc/loom/host.pem)", or plain and why.
  std::string describe() const;
  // A daemon's start: what its channels run, in the log; a warning when plain.
  void log() const;

 private:
  std::shared_ptr<grpc::ChannelCredentials> channel_;
  std::shared_ptr<grpc::ServerCredentials> server_;
  std::string description_;
};

}  // namespace loom::tls
