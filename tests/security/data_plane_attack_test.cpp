// A local user against the storage agent's data plane, as issue 19 found it: any process
// can open a libfabric endpoint and fi_read whatever the storage agent has registered.
// Each test is an attack made with a raw endpoint of the attacker's own (a fresh one per
// try: tcp drops a connection after a refused access), while a copy is under way so that
// the storage agent's provider is being driven and answers.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <rdma/fabric.h>
#include <unistd.h>

#include <fstream>

#include "loom/fabric/engine.hpp"
#include "loom/fabric/wire.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

namespace fs = std::filesystem;

// An endpoint of the attacker's own, with memory to read into.
class Peer {
 public:
  Peer() {
    auto info = fabric::Info::choose(options().fabric);
    EXPECT_TRUE(info) << info.error().to_string();
    auto f = fabric::Fabric::open(*info);
    auto domain = fabric::Domain::open(*f, *info);
    auto endpoint = fabric::Endpoint::open(*domain);
    EXPECT_TRUE(endpoint) << endpoint.error().to_string();
    endpoint_ = *endpoint;
    memory_.assign(std::size_t{4} << 20, std::byte{0});
    auto region = fabric::MemoryRegion::register_memory(*endpoint_, memory_.data(), memory_.size(),
                                                        FI_READ | FI_WRITE);
    EXPECT_TRUE(region) << region.error().to_string();
    region_ = std::move(*region);
    engine_ = std::make_unique<fabric::TransferEngine>(
        endpoint_, fabric::EngineOptions{.timeout = std::chrono::milliseconds(3000)});
  }
  std::string name() const { return fabric::encode_name(endpoint_->name()); }

  // Reads `length` bytes at `address` under `key` from the endpoint named `target`: the
  // bytes, or why not.
  Result<std::string> read(const std::string& target, std::uint64_t address, std::uint64_t key,
                           std::size_t length) {
    auto raw = fabric::decode_name(target);
    if (!raw) return std::unexpected(raw.error());
    auto peer = endpoint_->av().insert(*raw);
    if (!peer) return std::unexpected(peer.error());
    LOOM_TRY(engine_->read(*region_, 0, *peer, {address, key, length}, 0, length));
    return std::string(reinterpret_cast<const char*>(memory_.data()), length);
  }

 private:
  std::shared_ptr<fabric::Endpoint> endpoint_;
  std::vector<std::byte> memory_;
  std::unique_ptr<fabric::MemoryRegion> region_;
  std::unique_ptr<fabric::TransferEngine> engine_;
};

class DataPlaneAttackTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    DataPlaneTest::SetUp();
    const passwd* alice = ::getpwnam("loom-alice");
    const passwd* bob = ::getpwnam("loom-bob");
    ASSERT_TRUE(alice != nullptr && bob != nullptr) << "scripts/install-deps.sh makes the users";
    alice_ = {alice->pw_uid, alice->pw_gid};
    bob_ = {bob->pw_uid, bob->pw_gid};
    secret_.assign(std::size_t{1} << 20, '\0');
    for (std::size_t i = 0; i < secret_.size(); ++i) secret_[i] = "alice's secret! "[i % 16];
    std::ofstream(export_ / "secret.bin", std::ios::binary) << secret_;
    fs::permissions(export_ / "secret.bin", fs::perms::owner_read | fs::perms::owner_write);
    ::chown((export_ / "secret.bin").c_str(), alice_.first, alice_.second);
    ::chown(export_.c_str(), bob_.first, bob_.second);  // bob may write his results here
    stub_ = v1::Storage::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // Opens a file of the export as `user` would through their job (the agent, root, says whom).
  v1::OpenReply open(const std::string& path, std::pair<uid_t, gid_t> user, bool write,
                     const Peer& initiator) {
    auto credential = munge_credential();
    EXPECT_TRUE(credential) << credential.error().to_string();
    v1::OpenRequest request;
    request.set_credential(credential.value_or(""));
    request.set_path(path);
    request.set_write(write);
    request.set_uid(user.first);
    request.set_gid(user.second);
    request.set_initiator(initiator.name());
    v1::OpenReply reply;
    grpc::ClientContext context;
    const grpc::Status s = stub_->Open(&context, request, &reply);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return reply;
  }
  fabric::RemoteRegion lease(const v1::OpenReply& file, std::uint64_t offset, std::uint64_t length,
                             bool write, std::string* id = nullptr) {
    v1::RangeRequest request;
    request.set_handle(file.handle());
    request.set_offset(offset);
    request.set_length(length);
    v1::Lease reply;
    grpc::ClientContext context;
    const grpc::Status s =
        write ? stub_->Reserve(&context, request, &reply) : stub_->Fetch(&context, request, &reply);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (id != nullptr) *id = reply.id();
    auto region = fabric::decode_region(reply.region());
    EXPECT_TRUE(region) << region.error().to_string();
    return region.value_or(fabric::RemoteRegion{});
  }
  void release(const std::string& id) {
    v1::ReleaseRequest request;
    request.set_lease(id);
    v1::Empty ignored;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->Release(&context, request, &ignored).ok());
  }

  std::string secret_;
  std::pair<uid_t, gid_t> alice_, bob_;
  std::unique_ptr<v1::Storage::Stub> stub_;
};

TEST_F(DataPlaneAttackTest, GuessedKeysReachNothingWhileAnotherUsersFileIsStaged) {
  Peer alices_stager;
  const v1::OpenReply file = open("/secret.bin", alice_, false, alices_stager);
  const fabric::RemoteRegion leased = lease(file, 0, secret_.size(), false);
  // Keys small and in order, addresses from 0: what the storage agent used to hand out.
  for (std::uint64_t key = 0; key <= 16; ++key) {
    Peer bob;
    auto stolen = bob.read(file.target(), 0, key, 64);
    EXPECT_FALSE(stolen) << "key " << key << " at address 0 read: " << stolen.value();
  }
  EXPECT_GT(leased.key, std::uint64_t{0xffff'ffff}) << "a lease's key is drawn from 64 bits";
  // The lease holder reads: the storage agent was answering all along.
  auto got = alices_stager.read(file.target(), leased.address, leased.key, 64);
  ASSERT_TRUE(got) << got.error().to_string();
  EXPECT_EQ(*got, secret_.substr(0, 64));
}

TEST_F(DataPlaneAttackTest, ALeaseExposesExactlyItsBytes) {
  Peer stager;
  const v1::OpenReply file = open("/secret.bin", alice_, false, stager);
  const fabric::RemoteRegion one_byte = lease(file, 0, 1, false);
  EXPECT_EQ(one_byte.length, 1u);
  auto mine = stager.read(file.target(), one_byte.address, one_byte.key, 1);
  ASSERT_TRUE(mine) << mine.error().to_string();
  EXPECT_EQ(*mine, secret_.substr(0, 1));
  Peer longer;
  auto more = longer.read(file.target(), one_byte.address, one_byte.key, 4096);
  EXPECT_FALSE(more) << "read 4096 bytes through a lease of 1";
  Peer beyond;
  auto after = beyond.read(file.target(), one_byte.address + 1, one_byte.key, 1);
  EXPECT_FALSE(after) << "read the byte after a lease of 1";
}

TEST_F(DataPlaneAttackTest, AKeyIsDeadOnceItsLeaseEnds) {
  Peer stager;
  const v1::OpenReply file = open("/secret.bin", alice_, false, stager);
  std::string first_id;
  const fabric::RemoteRegion first = lease(file, 0, 4096, false, &first_id);
  auto during = stager.read(file.target(), first.address, first.key, 4096);
  ASSERT_TRUE(during) << during.error().to_string();
  release(first_id);
  // A second copy keeps the storage agent's provider driven while the old key is tried.
  const fabric::RemoteRegion second = lease(file, 4096, 4096, false);
  EXPECT_NE(second.key, first.key);
  Peer later;
  auto after = later.read(file.target(), first.address, first.key, 4096);
  EXPECT_FALSE(after) << "a released lease's key still read";
}

TEST_F(DataPlaneAttackTest, ABufferLentForWritingShowsNothingOfAnEarlierCopy) {
  Peer alices_stager;
  const v1::OpenReply secret = open("/secret.bin", alice_, false, alices_stager);
  const std::size_t quarter = secret_.size() / 4;
  std::vector<std::string> alices(4);
  for (std::size_t i = 0; i < 4; ++i) (void)lease(secret, i * quarter, quarter, false, &alices[i]);
  for (const std::string& id : alices) release(id);
  // Every buffer (4) has held alice's bytes; bob is lent one to write into.
  Peer bobs_stager;
  const v1::OpenReply result = open("/bob.out", bob_, true, bobs_stager);
  const fabric::RemoteRegion writable = lease(result, 0, secret_.size(), true);
  auto peek = bobs_stager.read(result.target(), writable.address, writable.key, 64);
  EXPECT_FALSE(peek) << "a lease to write was read: " << peek.value();
}

}  // namespace
}  // namespace loom::burstbuffer
