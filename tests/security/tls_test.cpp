// TLS on a gRPC channel (loom/proto/tls.hpp), with certificates made as a site makes them:
// bad files are refused at start naming the key and the file, and on a real loopback
// channel a client must hold the CA to reach a server, the server must hold a certificate
// the CA signed, and only a client that showed one counts as a host of the cluster.
#include "loom/proto/tls.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "loom/proto/storage.grpc.pb.h"
#include "temp.hpp"
#include "test_ca.hpp"

namespace loom {
namespace {

using testing::TestCa;

class TlsTest : public ::testing::Test {
 protected:
  TlsTest()
      : dir_(testing::temp_path("tls")),
        cluster_(dir_ / "cluster", "cluster-ca"),
        other_(dir_ / "other", "other-ca") {}

  static std::string load_error(const Config::Tls& files, tls::Role role) {
    auto loaded = tls::Tls::load(files, role);
    EXPECT_FALSE(loaded) << "loaded";
    return loaded ? "" : loaded.error().message();
  }

  std::filesystem::path dir_;
  TestCa cluster_, other_;
};

TEST_F(TlsTest, WithoutACaEveryChannelIsPlainAndSaysSo) {
  const auto plain = tls::Tls::load({}, tls::Role::kDaemon);
  ASSERT_TRUE(plain) << plain.error().to_string();
  EXPECT_FALSE(plain->enabled());
  EXPECT_NE(plain->describe().find("tls.ca is not set"), std::string::npos) << plain->describe();
  const TestCa::Host host = cluster_.host("node0");
  EXPECT_NE(load_error({"", host.cert, host.key}, tls::Role::kDaemon).find("need tls.ca"),
            std::string::npos);
}

TEST_F(TlsTest, BadFilesAreRefusedNamingTheKeyAndTheFile) {
  const TestCa::Host host = cluster_.host("node0");
  const TestCa::Host foreign = other_.host("intruder");
  const std::string ca = cluster_.ca();

  EXPECT_NE(load_error({ca, "", ""}, tls::Role::kDaemon).find("tls.cert is not"),
            std::string::npos);
  std::string e = load_error({ca, "/nonexistent/host.pem", host.key}, tls::Role::kDaemon);
  EXPECT_NE(e.find("tls.cert /nonexistent/host.pem: cannot open"), std::string::npos) << e;

  ::chmod(host.key.c_str(), 0644);
  e = load_error({ca, host.cert, host.key}, tls::Role::kDaemon);
  EXPECT_NE(e.find("tls.key " + host.key + ": group or others may read it (mode 0644)"),
            std::string::npos)
      << e;
  ::chmod(host.key.c_str(), 0600);

  e = load_error({ca, host.cert, foreign.key}, tls::Role::kDaemon);
  EXPECT_NE(e.find("tls.key " + foreign.key + ": not the key of tls.cert " + host.cert),
            std::string::npos)
      << e;
  e = load_error({ca, foreign.cert, foreign.key}, tls::Role::kDaemon);
  EXPECT_NE(e.find("tls.cert " + foreign.cert + ": does not verify against tls.ca " + ca),
            std::string::npos)
      << e;
  e = load_error({host.key, host.cert, host.key}, tls::Role::kDaemon);
  EXPECT_NE(e.find("tls.ca " + host.key + ": not a PEM certificate"), std::string::npos) << e;

  // Files a renewal replaces are often links (/etc/loom/host.pem -> the current one).
  std::filesystem::create_symlink(host.cert, dir_ / "host.pem");
  const auto linked =
      tls::Tls::load({ca, (dir_ / "host.pem").string(), host.key}, tls::Role::kDaemon);
  EXPECT_TRUE(linked) << linked.error().to_string();

  const auto client = tls::Tls::load({ca, "", ""}, tls::Role::kClient);
  ASSERT_TRUE(client) << client.error().to_string();
  EXPECT_TRUE(client->enabled());
  const auto daemon = tls::Tls::load({ca, host.cert, host.key}, tls::Role::kDaemon);
  ASSERT_TRUE(daemon) << daemon.error().to_string();
  EXPECT_NE(daemon->describe().find("certificate " + host.cert), std::string::npos);
}

// A server on loopback whose one call says whether its caller counts as a host of the
// cluster.
class ProbeServer final : public v1::Storage::Service {
 public:
  explicit ProbeServer(tls::Tls tls) : tls_(std::move(tls)) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", tls_.server(), &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    EXPECT_TRUE(server_ && port != 0);
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  ~ProbeServer() override {
    if (server_) server_->Shutdown();
  }
  grpc::Status Close(grpc::ServerContext* context, const v1::HandleRequest*, v1::Empty*) override {
    return tls_.from_cluster_host(*context)
               ? grpc::Status::OK
               : grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not a host");
  }
  // The call, from a client with `credentials`.
  grpc::Status call(const std::shared_ptr<grpc::ChannelCredentials>& credentials) const {
    auto stub = v1::Storage::NewStub(grpc::CreateChannel(address_, credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::HandleRequest request;
    v1::Empty reply;
    return stub->Close(&context, request, &reply);
  }

 private:
  tls::Tls tls_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(TlsTest, OnlyAClientWithTheCaReachesTheServerAndOnlyAHostIsTakenForOne) {
  const TestCa::Host server_host = cluster_.host("server");
  const TestCa::Host node = cluster_.host("node0");
  const TestCa::Host intruder = other_.host("intruder");
  const ProbeServer server(
      tls::Tls::load({cluster_.ca(), server_host.cert, server_host.key}, tls::Role::kDaemon)
          .value());
  const tls::Tls user = tls::Tls::load({cluster_.ca(), "", ""}, tls::Role::kClient).value();
  const tls::Tls host =
      tls::Tls::load({cluster_.ca(), node.cert, node.key}, tls::Role::kDaemon).value();
  const tls::Tls stranger =
      tls::Tls::load({other_.ca(), intruder.cert, intruder.key}, tls::Role::kDaemon).value();
  // A host of the cluster, and a user (who proves who they are with Munge, not here).
  const grpc::Status from_host = server.call(host.channel());
  EXPECT_TRUE(from_host.ok()) << from_host.error_message();
  EXPECT_EQ(server.call(user.channel()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Plain bytes to a TLS port, and a client of another CA (which does not trust the
  // server's certificate, nor the server its own): no call is made.
  EXPECT_EQ(server.call(grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.call(stranger.channel()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A certificate of another CA under the cluster's CA: the server refuses it in the
  // handshake, so the intruder cannot pass for a host.
  grpc::SslCredentialsOptions mixed;
  mixed.pem_root_certs = testing::run({"cat", cluster_.ca()}).out;
  mixed.pem_cert_chain = testing::run({"cat", intruder.cert}).out;
  mixed.pem_private_key = testing::run({"cat", intruder.key}).out;
  EXPECT_EQ(server.call(grpc::SslCredentials(mixed)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The server's certificate must name the address dialled: a host's certificate does not
// make its holder any other host.
TEST_F(TlsTest, AServerWhoseCertificateNamesAnotherAddressIsNotReached) {
  const TestCa::Host elsewhere = cluster_.host("elsewhere", "IP:198.18.0.9");
  const ProbeServer server(
      tls::Tls::load({cluster_.ca(), elsewhere.cert, elsewhere.key}, tls::Role::kDaemon).value());
  const tls::Tls user = tls::Tls::load({cluster_.ca(), "", ""}, tls::Role::kClient).value();
  EXPECT_EQ(server.call(user.channel()).error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace loom
