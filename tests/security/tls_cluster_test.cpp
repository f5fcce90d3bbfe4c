// TLS through a whole cluster (issue 19), as loom up runs it: what a user sends cannot be
// read on the wire, a user without the CA is told why they cannot reach the controller,
// the CLI does not talk to a controller the CA did not certify, and root on a machine
// without the cluster's certificate neither registers an agent nor opens a user's file on
// a storage agent.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "cluster_test.hpp"
#include "loom/common/munge.hpp"
#include "loom/proto/agent.grpc.pb.h"
#include "loom/proto/controller.grpc.pb.h"
#include "loom/proto/storage.grpc.pb.h"
#include "test_ca.hpp"

namespace loom::testing {
namespace {

// A TCP relay on loopback that keeps every byte it passes, both ways: what anybody on the
// path between a user and the controller reads. One connection at a time, until stopped.
class Relay {
 public:
  explicit Relay(const std::string& target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), size), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
    to_.sin_family = AF_INET;
    to_.sin_port =
        htons(static_cast<std::uint16_t>(std::stoi(target.substr(target.rfind(':') + 1))));
    ::inet_pton(AF_INET, target.substr(0, target.rfind(':')).c_str(), &to_.sin_addr);
    thread_ = std::thread([this] { serve(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd ready{listener_, POLLIN, 0};
      if (::poll(&ready, 1, 50) != 1) continue;
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (client >= 0 &&
          ::connect(server, reinterpret_cast<const sockaddr*>(&to_), sizeof to_) == 0) {
        pass(client, server);
      }
      ::close(client);
      ::close(server);
    }
  }
  void pass(int client, int server) {
    std::array<pollfd, 2> fds{pollfd{client, POLLIN, 0}, pollfd{server, POLLIN, 0}};
    std::array<char, 16384> buffer{};
    while (!stop_) {
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buffer.data(), buffer.size());
        if (n <= 0) return;
        {
          std::lock_guard lock(mutex_);
          seen_.append(buffer.data(), static_cast<std::size_t>(n));
        }
        if (::write(fds[1 - i].fd, buffer.data(), static_cast<std::size_t>(n)) != n) return;
      }
    }
  }

  int listener_ = -1;
  int port_ = 0;
  sockaddr_in to_{};
  std::atomic<bool> stop_ = false;
  std::mutex mutex_;
  std::string seen_;
  std::thread thread_;
};

class TlsClusterTest : public ClusterTest {
 protected:
  std::string config() const override { return ""; }

  // `loom ARGS` as loom-alice with `env` (NAME=VALUE) only, giving up on the controller
  // after 2 s.
  Completed alice_with(const std::vector<std::string>& env,
                       const std::vector<std::string>& args) const {
    const std::filesystem::path config = dir_ / "quick.toml";
    std::ofstream(config) << "[controller]\nconnect_timeout = \"0:02\"\n";
    std::vector<std::string> argv{
        "runuser", "-u", "loom-alice", "--", "env", "-i", "LOOM_CONFIG=" + config.string()};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(built("cli/loom"));
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }
};

TEST_F(TlsClusterTest, NothingAUserSendsOrIsAnsweredCanBeReadOnTheWire) {
  ASSERT_FALSE(cluster_->tls_ca().empty()) << "loom up runs TLS unless told --no-tls";
  Relay relay(cluster_->address());
  const std::string marker = "alices-secret-7f3a";
  const Completed submitted =
      alice_with({"LOOM_TLS_CA=" + cluster_->tls_ca()},
                 {"submit", "--controller", relay.address(), "--job-name", marker, "-o",
                  (dir_ / "out").string(), "--", "echo", marker});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = lines(submitted.out).at(0);
  const Completed shown = alice_with({"LOOM_TLS_CA=" + cluster_->tls_ca()},
                                     {"show", "--controller", relay.address(), id, "--json"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find(marker), std::string::npos) << "the answer came through the relay";
  const std::string seen = relay.seen();
  ASSERT_GT(seen.size(), 1000u);
  EXPECT_EQ(seen[0], '\x16') << "a TLS handshake record comes first";
  EXPECT_EQ(seen.find(marker), std::string::npos) << "the job's name and command, in clear";
  EXPECT_EQ(seen.find("loom-alice"), std::string::npos) << "the user's name, in clear";
  EXPECT_EQ(seen.find("MUNGE:"), std::string::npos) << "a credential, in clear";
}

TEST_F(TlsClusterTest, AUserWithoutTheCaIsToldWhyTheControllerIsUnreachable) {
  const Completed refused = alice_with({"LOOM_CONTROLLER=" + cluster_->address()}, {"queue"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("(it listens, but the handshake failed, without TLS: tls.ca is not "
                             "set)"),
            std::string::npos)
      << "told at once, not after controller.connect_timeout: " << refused.err;
}

TEST_F(TlsClusterTest, TheCliTalksToNoControllerTheCaDidNotCertify) {
  // A controller of another CA, on this machine's address: the CLI sends it nothing.
  TestCa other(temp_path("other-ca"), "other-ca");
  const TestCa::Host impostor = other.host("impostor");
  const tls::Tls impostor_tls =
      tls::Tls::load({other.ca(), impostor.cert, impostor.key}, tls::Role::kDaemon).value();
  struct Counting final : v1::Controller::Service {
    std::atomic<int> calls = 0;
    grpc::Status List(grpc::ServerContext*, const v1::ListRequest*, v1::ListReply*) override {
      ++calls;
      return grpc::Status::OK;
    }
  } counting;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", impostor_tls.server(), &port);
  builder.RegisterService(&counting);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server && port != 0);
  const Completed refused = alice_with(
      {"LOOM_TLS_CA=" + cluster_->tls_ca(), "LOOM_CONTROLLER=127.0.0.1:" + std::to_string(port)},
      {"queue"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("(it listens, but the handshake failed, over TLS)"), std::string::npos)
      << refused.err;
  EXPECT_EQ(counting.calls, 0);
  server->Shutdown();
}

TEST_F(TlsClusterTest, RootWithoutTheClustersCertificateRegistersNoAgent) {
  auto credential = munge_credential();  // root's: Munge alone would let it in
  ASSERT_TRUE(credential) << credential.error().to_string();
  auto stub =
      v1::AgentLink::NewStub(grpc::CreateChannel(cluster_->address(), cluster_->tls().channel()));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  v1::FromAgent hello;
  hello.mutable_hello()->set_name("rogue");
  hello.mutable_hello()->set_credential(*credential);
  stream->Write(hello);
  stream->WritesDone();
  v1::ToAgent ignored;
  EXPECT_FALSE(stream->Read(&ignored));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("showed no certificate of the cluster's CA"),
            std::string::npos)
      << status.error_message();
  const Completed nodes = cluster_->loom("", {"nodes"});
  EXPECT_EQ(nodes.out.find("rogue"), std::string::npos) << nodes.out;
}

TEST_F(TlsClusterTest, RootWithoutTheClustersCertificateOpensNoUsersFile) {
  const std::string line = LocalCluster::wait_for(
      cluster_->state_dir() / "state" / "loomd-storage.log", "for staging at ");
  const std::string address = line.substr(line.rfind(' ') + 1);
  auto credential = munge_credential();
  ASSERT_TRUE(credential) << credential.error().to_string();
  const passwd* alice = ::getpwnam("loom-alice");
  ASSERT_NE(alice, nullptr);
  v1::OpenRequest request;
  request.set_credential(*credential);
  request.set_path("/anything");
  request.set_uid(alice->pw_uid);
  request.set_gid(alice->pw_gid);
  // With the CA (the storage agent is the cluster's) but no host certificate.
  auto stub = v1::Storage::NewStub(grpc::CreateChannel(address, cluster_->tls().channel()));
  grpc::ClientContext context;
  v1::OpenReply reply;
  const grpc::Status status = stub->Open(&context, request, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_NE(status.error_message().find("only an agent"), std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace loom::testing
