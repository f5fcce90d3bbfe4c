// The fabric conformance suite, as fabtests has per object and per pattern, run on every
// provider that works here: tcp;ofi_rxm (on loopback) and shm.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "fabric_fixture.hpp"
#include "loom/fabric/engine.hpp"
#include "loom/fabric/progress.hpp"
#include "loom/fabric/wire.hpp"

namespace loom::fabric {
namespace {

using namespace loom::fabric::testing;

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& provider() const { return GetParam(); }
};

TEST_P(Conformance, ReportsTheMemoryRegistrationModeItAsksFor) {
  auto info = Info::choose(options_for(provider()));
  ASSERT_TRUE(info.has_value()) << info.error().to_string();
  EXPECT_EQ(info->offer().provider, provider());
  // Measured on libfabric 1.17: neither asks for keys, local registration or endpoint binding.
  const std::vector<std::string> expected = provider() == "shm"
                                                ? std::vector<std::string>{"FI_MR_VIRT_ADDR"}
                                                : std::vector<std::string>{};
  EXPECT_EQ(info->offer().mr_mode, expected);
}

TEST_P(Conformance, ObjectsCloseInAnyOrder) {
  for (int order = 0; order < 3; ++order) {
    auto ep = open_endpoint(provider());
    ASSERT_TRUE(ep.has_value()) << ep.error().to_string();
    std::vector<std::byte> buffer(4096);
    auto mr = MemoryRegion::register_memory(**ep, buffer.data(), buffer.size(), kAllAccess);
    ASSERT_TRUE(mr.has_value()) << mr.error().to_string();
    std::shared_ptr<Domain> domain = (*ep)->domain();
    // Drop the owners in different orders; children keep their parents alive.
    if (order == 0) {
      ep->reset();
      domain.reset();
      mr->reset();
    } else if (order == 1) {
      domain.reset();
      mr->reset();
      ep->reset();
    } else {
      mr->reset();
      ep->reset();
      domain.reset();
    }
  }
}

TEST_P(Conformance, KeysLoomChoosesAreUnique) {
  auto ep = open_endpoint(provider());
  ASSERT_TRUE(ep.has_value());
  std::vector<std::byte> buffer(std::size_t{64} * 4096);
  std::vector<std::unique_ptr<MemoryRegion>> regions;
  std::set<std::uint64_t> keys;
  for (std::size_t offset = 0; offset < buffer.size(); offset += 4096) {
    auto mr = MemoryRegion::register_memory(**ep, buffer.data() + offset, 4096, kAllAccess);
    ASSERT_TRUE(mr.has_value()) << mr.error().to_string();
    keys.insert((*mr)->key());
    regions.push_back(std::move(*mr));
  }
  EXPECT_EQ(keys.size(), 64u);
}

// Two endpoints in this process, each in its own domain; the target's progress runs on a
// thread of its own, as on a storage node.
struct Pair {
  std::shared_ptr<Endpoint> initiator, target;
  fi_addr_t target_address = FI_ADDR_UNSPEC;
};

Pair connect(const std::string& provider) {
  Pair p;
  auto a = open_endpoint(provider);
  auto b = open_endpoint(provider);
  EXPECT_TRUE(a.has_value() && b.has_value());
  p.initiator = *a;
  p.target = *b;
  p.target_address = p.initiator->av().insert(p.target->name()).value();
  EXPECT_TRUE(p.target->av().insert(p.initiator->name()).has_value());
  return p;
}

TEST_P(Conformance, WritesAndReadsAreByteExactFromOneByteTo256MiB) {
  Pair pair = connect(provider());
  constexpr std::size_t kLargest = std::size_t{256} << 20;
  // Room for the largest transfer at odd offsets on both sides.
  std::vector<std::byte> source = pattern(kLargest + 64, 1);
  std::vector<std::byte> remote(kLargest + 64);
  std::vector<std::byte> back(kLargest + 64);
  auto src_mr =
      MemoryRegion::register_memory(*pair.initiator, source.data(), source.size(), kAllAccess)
          .value();
  auto back_mr =
      MemoryRegion::register_memory(*pair.initiator, back.data(), back.size(), kAllAccess).value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), remote.size(), kAllAccess).value();
  ProgressThread progress(pair.target);
  TransferEngine engine(pair.initiator, {.window = 8, .max_operation = std::size_t{1} << 20});
  for (std::size_t size :
       {std::size_t{1}, std::size_t{7}, std::size_t{4095}, std::size_t{4097}, std::size_t{65537},
        (std::size_t{1} << 20) + 13, (std::size_t{64} << 20) + 1, kLargest}) {
    SCOPED_TRACE(size);
    const std::size_t local_offset = 3, remote_offset = 5;  // unaligned on both sides
    ASSERT_TRUE(engine
                    .write(*src_mr, local_offset, pair.target_address, remote_mr->remote(),
                           remote_offset, size)
                    .has_value());
    ASSERT_EQ(std::memcmp(remote.data() + remote_offset, source.data() + local_offset, size), 0)
        << "write";
    ASSERT_TRUE(
        engine.read(*back_mr, 11, pair.target_address, remote_mr->remote(), remote_offset, size)
            .has_value());
    ASSERT_EQ(std::memcmp(back.data() + 11, source.data() + local_offset, size), 0) << "read";
  }
}

TEST_P(Conformance, TheEngineMovesOnlyTheCallersRegisteredMemory) {
  Pair pair = connect(provider());
  const std::size_t bytes = std::size_t{16} << 20;
  std::vector<std::byte> local = pattern(bytes, 2);
  std::vector<std::byte> remote(bytes);
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), bytes, kAllAccess).value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), bytes, kAllAccess).value();
  const std::size_t registered = MemoryRegion::live_count();
  ProgressThread progress(pair.target);
  TransferEngine engine(pair.initiator, {.window = 4, .max_operation = std::size_t{1} << 20});
  std::size_t posted = 0, outside = 0;
  const RemoteRegion target = remote_mr->remote();
  engine.on_post([&](const PostedOperation& op) {
    ++posted;
    const bool local_inside =
        op.local >= local.data() && op.local + op.length <= local.data() + bytes;
    const bool remote_inside = op.remote_address >= target.address &&
                               op.remote_address + op.length <= target.address + target.length;
    if (!local_inside || !remote_inside || op.key != target.key) ++outside;
  });
  ASSERT_TRUE(engine.write(*local_mr, 0, pair.target_address, target, 0, bytes).has_value());
  ASSERT_TRUE(engine.read(*local_mr, 0, pair.target_address, target, 0, bytes).has_value());
  EXPECT_EQ(posted, 32u);  // 16 MiB each way in 1 MiB operations
  EXPECT_EQ(outside, 0u);
  EXPECT_EQ(MemoryRegion::live_count(), registered);
  EXPECT_EQ(std::memcmp(remote.data(), local.data(), bytes), 0);
}

std::size_t resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) return std::stoul(line.substr(6));
  }
  return 0;
}

TEST_P(Conformance, MovingMoreBytesDoesNotGrowMemory) {
  Pair pair = connect(provider());
  const std::size_t bytes = std::size_t{32} << 20;
  std::vector<std::byte> local = pattern(bytes, 3);
  std::vector<std::byte> remote = pattern(bytes, 4);  // touched: pages exist before timing RSS
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), bytes, kAllAccess).value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), bytes, kAllAccess).value();
  ProgressThread progress(pair.target);
  TransferEngine engine(pair.initiator);
  ASSERT_TRUE(
      engine.write(*local_mr, 0, pair.target_address, remote_mr->remote(), 0, bytes).has_value());
  const std::size_t before = resident_kib();
  for (int i = 0; i < 16; ++i) {  // 512 MiB
    ASSERT_TRUE(
        engine.write(*local_mr, 0, pair.target_address, remote_mr->remote(), 0, bytes).has_value());
  }
  const std::size_t after = resident_kib();
  EXPECT_LT(after, before + std::size_t{8} * 1024)
      << "RSS grew from " << before << " KiB to " << after << " KiB";
}

TEST_P(Conformance, ABadKeyIsAnErrorNotACrash) {
  Pair pair = connect(provider());
  std::vector<std::byte> local = pattern(8192, 5), remote(8192);
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), local.size(), kAllAccess)
          .value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), remote.size(), kAllAccess).value();
  {
    ProgressThread progress(pair.target);
    TransferEngine engine(pair.initiator, {.timeout = std::chrono::seconds(2)});
    RemoteRegion wrong = remote_mr->remote();
    wrong.key += 0x5eed;
    auto status = engine.write(*local_mr, 0, pair.target_address, wrong, 0, local.size());
    ASSERT_FALSE(status.has_value());
    if (provider() == "shm") {
      // libfabric 1.17's shm drops an access with a bad key without a completion: the
      // initiator learns of it by the timeout.
      EXPECT_EQ(status.error().code(), ErrorCode::kDeadlineExceeded) << status.error().to_string();
    } else {
      EXPECT_NE(status.error().message().find("RMA completion"), std::string::npos)
          << status.error().to_string();
    }
    EXPECT_EQ(remote, std::vector<std::byte>(8192)) << "nothing was written";
  }
  pair.initiator.reset();  // closed before the buffers an abandoned operation may name
}

// A peer that has a region's key reaches it only for the access it was registered for:
// the stager's own buffers, registered for local use, are nobody else's to read.
TEST_P(Conformance, ARegionForLocalUseRefusesAPeerThatHasItsKey) {
  Pair pair = connect(provider());
  std::vector<std::byte> local(8192), secret = pattern(8192, 6);
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), local.size(), kAllAccess)
          .value();
  auto secret_mr =
      MemoryRegion::register_memory(*pair.target, secret.data(), secret.size(), FI_READ | FI_WRITE)
          .value();
  {
    ProgressThread progress(pair.target);
    TransferEngine engine(pair.initiator, {.timeout = std::chrono::seconds(2)});
    auto status =
        engine.read(*local_mr, 0, pair.target_address, secret_mr->remote(), 0, local.size());
    EXPECT_FALSE(status.has_value()) << "read a region registered for local use";
    EXPECT_EQ(local, std::vector<std::byte>(8192)) << "nothing arrived";
  }
  pair.initiator.reset();  // closed before the buffers an abandoned operation may name
}

// Keys Loom picks are drawn at random from the provider's key size, not counted: one key
// says nothing of the next.
TEST_P(Conformance, KeysLoomChoosesCannotBeGuessedFromEachOther) {
  auto ep = open_endpoint(provider());
  ASSERT_TRUE(ep.has_value());
  std::vector<std::byte> buffer(4096);
  std::vector<std::uint64_t> keys;
  for (int i = 0; i < 16; ++i) {
    auto mr = MemoryRegion::register_memory(**ep, buffer.data(), buffer.size(), kAllAccess);
    ASSERT_TRUE(mr.has_value()) << mr.error().to_string();
    keys.push_back((*mr)->key());
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    EXPECT_GT(keys[i], std::uint64_t{0xffff'ffff}) << "key " << i << " is small";
    if (i > 0) {
      EXPECT_GT(keys[i] - keys[i - 1] + 8, std::uint64_t{16}) << "keys " << i - 1 << ", " << i;
    }
  }
}

TEST_P(Conformance, CancelStopsATransferAndTheEngineGoesOn) {
  Pair pair = connect(provider());
  const std::size_t bytes = std::size_t{32} << 20;
  std::vector<std::byte> local = pattern(bytes, 6), remote(bytes);
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), bytes, kAllAccess).value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), bytes, kAllAccess).value();
  ProgressThread progress(pair.target);
  TransferEngine engine(pair.initiator, {.window = 2, .max_operation = std::size_t{64} << 10});
  std::size_t posted = 0;
  engine.on_post([&](const PostedOperation&) {
    if (++posted == 4) engine.cancel();
  });
  auto cancelled = engine.write(*local_mr, 0, pair.target_address, remote_mr->remote(), 0, bytes);
  ASSERT_FALSE(cancelled.has_value());
  EXPECT_EQ(cancelled.error().code(), ErrorCode::kCancelled);
  EXPECT_LT(posted, bytes / (64 << 10)) << "it went on posting after cancel()";
  engine.on_post(nullptr);
  ASSERT_TRUE(
      engine.write(*local_mr, 0, pair.target_address, remote_mr->remote(), 0, bytes).has_value());
  EXPECT_EQ(remote, local);
}

TEST_P(Conformance, RegionBoundsAreCheckedBeforeAnythingIsPosted) {
  Pair pair = connect(provider());
  std::vector<std::byte> local(100), remote(100);
  auto local_mr =
      MemoryRegion::register_memory(*pair.initiator, local.data(), local.size(), kAllAccess)
          .value();
  auto remote_mr =
      MemoryRegion::register_memory(*pair.target, remote.data(), remote.size(), kAllAccess).value();
  TransferEngine engine(pair.initiator);
  auto over = engine.write(*local_mr, 0, pair.target_address, remote_mr->remote(), 50, 60);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code(), ErrorCode::kOutOfRange);
  EXPECT_EQ(over.error().message(),
            "fi_write: 60 bytes at offset 50 overrun the remote region of 100 bytes");
}

// The target lives in a child process: it opens its endpoint and a region, sends both over
// a pipe, and drives progress until the parent closes its end (or it is killed).
struct Child {
  pid_t pid = -1;
  std::vector<std::byte> name;
  RemoteRegion region;
  int stop = -1;  // closing it ends the child, which closes its endpoint first
};

void end(Child& child) {
  ::close(child.stop);
  ::waitpid(child.pid, nullptr, 0);
}

// A child killed with SIGKILL cannot remove its shm region from /dev/shm: the test does.
void remove_region_of(const Child& child, const std::string& provider) {
  if (provider != "shm") return;
  std::string name(reinterpret_cast<const char*>(child.name.data()), child.name.size());
  name.resize(std::strlen(name.c_str()));
  std::filesystem::remove(std::filesystem::path("/dev/shm") / name);
}

Child spawn_target(const std::string& provider, std::size_t bytes, unsigned seed) {
  int to_parent[2], from_parent[2];
  EXPECT_EQ(::pipe(to_parent), 0);
  EXPECT_EQ(::pipe(from_parent), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(to_parent[0]);
    ::close(from_parent[1]);
    {
      auto ep = open_endpoint(provider);
      if (!ep) ::_exit(2);
      std::vector<std::byte> memory = pattern(bytes, seed);
      auto mr = MemoryRegion::register_memory(**ep, memory.data(), bytes, kAllAccess);
      if (!mr) ::_exit(3);
      const std::string message =
          encode_name((*ep)->name()) + "\n" + encode_region((*mr)->remote()) + "\n";
      if (::write(to_parent[1], message.data(), message.size()) !=
          static_cast<ssize_t>(message.size()))
        ::_exit(4);
      ProgressThread progress(*ep);
      char byte;
      while (::read(from_parent[0], &byte, 1) > 0) {
      }
    }  // progress, region and endpoint closed: shm removes its region
    ::_exit(0);
  }
  ::close(to_parent[1]);
  ::close(from_parent[0]);
  std::string text;
  char c;
  int lines = 0;
  while (lines < 2 && ::read(to_parent[0], &c, 1) == 1) {
    text += c;
    if (c == '\n') ++lines;
  }
  ::close(to_parent[0]);
  Child child;
  child.pid = pid;
  const std::size_t newline = text.find('\n');
  child.name = decode_name(text.substr(0, newline)).value();
  child.region = decode_region(text.substr(newline + 1, text.size() - newline - 2)).value();
  child.stop = from_parent[1];
  return child;
}

TEST_P(Conformance, TransfersAcrossTwoProcesses) {
  const std::size_t bytes = (std::size_t{8} << 20) + 3;
  Child child = spawn_target(provider(), bytes, 7);
  auto ep = open_endpoint(provider());
  ASSERT_TRUE(ep.has_value()) << ep.error().to_string();
  const fi_addr_t peer = (*ep)->av().insert(child.name).value();
  std::vector<std::byte> local(bytes);
  auto mr = MemoryRegion::register_memory(**ep, local.data(), bytes, kAllAccess).value();
  TransferEngine engine(*ep, {.timeout = std::chrono::seconds(10)});
  ASSERT_TRUE(engine.read(*mr, 0, peer, child.region, 0, bytes).has_value());
  EXPECT_EQ(local, pattern(bytes, 7)) << "read from the child";
  std::vector<std::byte> mine = pattern(bytes, 8);
  std::memcpy(local.data(), mine.data(), bytes);
  ASSERT_TRUE(engine.write(*mr, 0, peer, child.region, 0, bytes).has_value());
  std::ranges::fill(local, std::byte{0});
  ASSERT_TRUE(engine.read(*mr, 0, peer, child.region, 0, bytes).has_value());
  EXPECT_EQ(local, mine) << "written to the child and read back";
  ep->reset();
  end(child);
}

TEST_P(Conformance, APeerKilledMidTransferIsAnErrorWithinTheTimeout) {
  if (provider() == "shm") {
    // shm posts into the peer's region under a spinlock that lives in that region; a peer
    // killed while its progress holds it leaves it held, and fi_read spins forever inside
    // libfabric where no timeout of Loom's can reach (CI saw it: a 180 s hang).
    GTEST_SKIP() << "libfabric 1.17 shm: a peer killed holding its region's lock stalls its peers";
  }
  const std::size_t bytes = std::size_t{64} << 20;
  Child child = spawn_target(provider(), bytes, 9);
  auto ep = open_endpoint(provider());
  ASSERT_TRUE(ep.has_value());
  const fi_addr_t peer = (*ep)->av().insert(child.name).value();
  std::vector<std::byte> local(bytes);
  auto mr = MemoryRegion::register_memory(**ep, local.data(), bytes, kAllAccess).value();
  const auto timeout = std::chrono::seconds(3);
  {
    TransferEngine engine(
        *ep, {.window = 4, .max_operation = std::size_t{256} << 10, .timeout = timeout});
    std::size_t posted = 0;
    engine.on_post([&](const PostedOperation&) {
      if (++posted == 8) ::kill(child.pid, SIGKILL);  // the peer dies with operations in flight
    });
    const auto start = std::chrono::steady_clock::now();
    Status status;
    for (int i = 0; i < 50 && status; ++i)
      status = engine.read(*mr, 0, peer, child.region, 0, bytes);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(status.has_value()) << "a dead peer went unnoticed";
    EXPECT_LT(took, timeout + std::chrono::seconds(2)) << status.error().to_string();
    ep->reset();  // close the endpoint before the engine and its buffers go
  }
  end(child);
  remove_region_of(child, provider());
}

INSTANTIATE_TEST_SUITE_P(Providers, Conformance, ::testing::Values("tcp;ofi_rxm", "shm"),
                         [](const auto& info) {
                           return info.param == "shm" ? std::string("shm") : std::string("tcp_rxm");
                         });

TEST(Wire, NamesAndRegionsRoundTripAndBadTextIsNamed) {
  const std::vector<std::byte> name = pattern(37, 11);
  EXPECT_EQ(decode_name(encode_name(name)).value(), name);
  const RemoteRegion region{0x7f00deadbeef, 42, 1ull << 30};
  EXPECT_EQ(encode_region(region), "7f00deadbeef:2a:40000000");
  EXPECT_EQ(decode_region(encode_region(region)).value(), region);
  EXPECT_EQ(decode_name("abc").error().message(),
            "endpoint name \"abc\": expected an even number of hex digits");
  EXPECT_EQ(decode_name("zz").error().message(),
            "endpoint name \"zz\": 'z' at 0 is not a hex digit");
  EXPECT_EQ(decode_region("12:xy:3").error().message(),
            "region \"12:xy:3\": key \"xy\" is not a hex number");
  EXPECT_EQ(decode_region("12").error().message(),
            "region \"12\": expected address:key:length in hex");
}

}  // namespace
}  // namespace loom::fabric
