// loom-fabric-bw: RMA bandwidth, used like ib_write_bw and fabtests' fi_rma_bw, with their
// flags where they mean the same (fabtests' short flags where the two differ: this is a
// libfabric program).
//
//   loom-fabric-bw [-p PROVIDER] [-d INTERFACE] [-o write|read] [-S BYTES|all | -a]
//                  [-I N] [-W W] [-P PORT] [--json] [SERVER]
//
// Without SERVER it is the server: it exposes a registered buffer and drives progress
// until the client is done. With the server's address it is the client and measures, per
// size, in the same run:
//   loom  the TransferEngine (operations of the size, W in flight);
//   raw   a bare fi_write/fi_read loop on one pre-registered buffer, no Loom engine (what
//         libfabric alone reaches, as fabtests' fi_rma_bw measures);
// and once: single-thread memcpy from memory (256 MiB buffers, beyond the caches) and
// one-stream TCP over loopback. A TCP socket is used only to exchange endpoint names.
// Buffers are allocated, touched and registered before any timing, and reused: on this VM
// freshly touched memory runs at a fraction of the speed (../shared/MACHINE.md).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loom/common/bytes.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/fabric/engine.hpp"
#include "loom/fabric/progress.hpp"
#include "loom/fabric/wire.hpp"

namespace {

using namespace loom;
using namespace loom::fabric;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kBuffer = std::size_t{64} << 20;  // each side's registered buffer
constexpr std::uint64_t kAccess = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;

struct Args {
  std::string provider, interface, op = "write", server;
  std::size_t size = std::size_t{4} << 20;
  bool sweep = false, json = false;
  std::size_t iters = 0;  // 0: about 1 GiB per size, between 100 and 100,000 operations
  std::size_t window = 16;
  int port = 18515;
};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "loom-fabric-bw: %s\n", message.c_str());
  std::exit(1);
}

template <typename T>
T check(Result<T> result, const char* what) {
  if (!result) die(std::string(what) + ": " + result.error().to_string());
  return std::move(*result);
}

void send_line(int fd, const std::string& line) {
  const std::string data = line + "\n";
  if (::send(fd, data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size()))
    die("exchange: send failed");
}

std::string recv_line(int fd) {
  std::string line;
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  die("exchange: the peer closed the connection");
}

std::shared_ptr<Endpoint> open_endpoint(const Args& a) {
  Info info = check(Info::choose({a.provider, a.interface}), "choosing a provider");
  auto fabric = check(Fabric::open(info), "opening the fabric");
  auto domain = check(Domain::open(fabric, info), "opening the domain");
  return check(Endpoint::open(domain), "opening the endpoint");
}

std::vector<std::byte> touched(std::size_t bytes) {
  std::vector<std::byte> buffer(bytes);
  for (std::size_t i = 0; i < bytes; i += 4096) buffer[i] = std::byte{1};
  return buffer;
}

int run_server(const Args& a) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(a.port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0) {
    die("cannot listen on port " + std::to_string(a.port) + ": " + loom::errno_text(errno));
  }
  std::fprintf(stderr, "loom-fabric-bw: server waiting on port %d\n", a.port);
  const int fd = ::accept(listener, nullptr, nullptr);
  auto ep = open_endpoint(a);
  std::vector<std::byte> buffer = touched(kBuffer);
  auto mr = check(MemoryRegion::register_memory(*ep, buffer.data(), buffer.size(), kAccess),
                  "registering");
  send_line(fd, encode_name(ep->name()));
  send_line(fd, encode_region(mr->remote()));
  const auto client = check(decode_name(recv_line(fd)), "client name");
  check(ep->av().insert(client), "inserting the client");
  ProgressThread progress(ep);
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
  }  // the client closes when done
  ::close(fd);
  ::close(listener);
  return 0;
}

struct Sample {
  double avg_gbps = 0, peak_gbps = 0, mpps = 0, latency_us = 0;
};

// Runs `rounds` rounds of `round(n)` (which moves n operations of `size`), timing each.
template <typename Round>
Sample measure(std::size_t size, std::size_t iters, Round round) {
  const std::size_t rounds = 5;
  const std::size_t per_round = std::max<std::size_t>(1, iters / rounds);
  round(std::min<std::size_t>(per_round, 64));  // warm-up
  double total_s = 0, best = 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    round(per_round);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    total_s += s;
    best = std::max(best, static_cast<double>(per_round * size) / s / 1e9);
  }
  Sample out;
  out.avg_gbps = static_cast<double>(per_round * rounds * size) / total_s / 1e9;
  out.peak_gbps = best;
  out.mpps = static_cast<double>(per_round * rounds) / total_s / 1e6;
  return out;
}

// One-at-a-time round trips for the latency of small sizes: the time of one operation.
template <typename One>
double latency_us(One one) {
  for (int i = 0; i < 100; ++i) one();
  const int n = 2000;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) one();
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / n;
}

// The raw loop: post up to `window` fi_write/fi_read on one buffer, reap, repeat.
void raw_round(Endpoint& ep, MemoryRegion& mr, fi_addr_t peer, const RemoteRegion& remote,
               bool write, std::size_t size, std::size_t window, std::size_t count) {
  std::vector<fi_context2> contexts(window);
  std::size_t posted = 0, completed = 0, slot = 0;
  std::array<fi_cq_entry, 16> entries{};
  while (completed < count) {
    while (posted < count && posted - completed < window) {
      const std::size_t offset = (posted * size) % (kBuffer - size + 1);
      const ssize_t rc =
          write ? fi_write(ep.get(), mr.data() + offset, size, mr.descriptor(), peer,
                           remote.address + offset, remote.key, &contexts[slot % window])
                : fi_read(ep.get(), mr.data() + offset, size, mr.descriptor(), peer,
                          remote.address + offset, remote.key, &contexts[slot % window]);
      if (rc == -FI_EAGAIN) break;
      if (rc != 0) die(fi_error(write ? "fi_write" : "fi_read", static_cast<int>(rc)).to_string());
      ++posted;
      ++slot;
    }
    const ssize_t n = fi_cq_read(ep.cq().get(), entries.data(), entries.size());
    if (n > 0) completed += static_cast<std::size_t>(n);
    if (n == -FI_EAVAIL) die("raw loop: an operation failed");
  }
}

double memcpy_gbps() {
  const std::size_t bytes = std::size_t{256} << 20;
  std::vector<std::byte> a = touched(bytes), b = touched(bytes);
  std::vector<double> rates;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    rates.push_back(static_cast<double>(bytes) /
                    std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
  }
  std::ranges::sort(rates);
  return rates[rates.size() / 2];
}

double tcp_loopback_gbps() {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    die("loopback listener: " + loom::errno_text(errno));
  const std::size_t total = std::size_t{2} << 30, chunk = std::size_t{4} << 20;
  std::thread receiver([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    std::vector<char> buffer(chunk);
    std::size_t got = 0;
    while (got < total) {
      const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    die("loopback connect: " + loom::errno_text(errno));
  std::vector<char> buffer(chunk, 'x');
  // Warm the socket buffers before timing.
  const auto t0 = Clock::now();
  std::size_t sent = 0;
  while (sent < total) {
    const ssize_t n = ::send(fd, buffer.data(), std::min(chunk, total - sent), 0);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  receiver.join();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  ::close(listener);
  return static_cast<double>(total) / s / 1e9;
}

int run_client(const Args& a) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(a.port));
  if (::inet_pton(AF_INET, a.server.c_str(), &addr.sin_addr) != 1)
    die("not an IPv4 address: " + a.server);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    die("cannot reach the server at " + a.server + ":" + std::to_string(a.port) + ": " +
        loom::errno_text(errno));
  }
  auto ep = open_endpoint(a);
  const auto server_name = check(decode_name(recv_line(fd)), "server name");
  const RemoteRegion remote = check(decode_region(recv_line(fd)), "server region");
  const fi_addr_t peer = check(ep->av().insert(server_name), "inserting the server");
  send_line(fd, encode_name(ep->name()));
  std::vector<std::byte> buffer = touched(kBuffer);
  auto mr = check(MemoryRegion::register_memory(*ep, buffer.data(), buffer.size(), kAccess),
                  "registering");
  const bool write = a.op == "write";

  std::vector<std::size_t> sizes;
  if (a.sweep) {
    for (std::size_t s = 2; s <= (std::size_t{8} << 20); s *= 2) sizes.push_back(s);
  } else {
    sizes.push_back(a.size);
  }
  nlohmann::json results = nlohmann::json::array();
  const Offer offer = ep->domain()->info().offer();
  if (!a.json) {
    std::printf("loom-fabric-bw: %s %s on %s, window %zu, %s buffers pre-touched and registered\n",
                offer.provider.c_str(), a.op.c_str(), offer.domain.c_str(), a.window,
                format_bytes(Bytes(kBuffer)).c_str());
    std::printf("%10s %8s | %12s %12s %10s %9s | %12s %12s %10s | %6s\n", "bytes", "iters",
                "peak GB/s", "avg GB/s", "Mpps", "lat us", "raw peak", "raw avg", "raw Mpps",
                "loom%");
  }
  for (std::size_t size : sizes) {
    const std::size_t iters =
        a.iters != 0 ? a.iters
                     : std::clamp<std::size_t>((std::size_t{1} << 30) / size, 100, 100000);
    TransferEngine engine(
        ep, {.window = a.window, .max_operation = size, .timeout = std::chrono::seconds(30)});
    // The engine moves `n` operations of `size` as calls of up to the whole buffer.
    auto loom_round = [&](std::size_t n) {
      const std::size_t per_call = std::max<std::size_t>(1, kBuffer / size);
      for (std::size_t done = 0; done < n;) {
        const std::size_t ops = std::min(per_call, n - done);
        Status s = write ? engine.write(*mr, 0, peer, remote, 0, ops * size)
                         : engine.read(*mr, 0, peer, remote, 0, ops * size);
        if (!s) die(s.error().to_string());
        done += ops;
      }
    };
    Sample loom = measure(size, iters, loom_round);
    Sample raw = measure(size, iters, [&](std::size_t n) {
      raw_round(*ep, *mr, peer, remote, write, size, a.window, n);
    });
    if (size <= 65536) {
      loom.latency_us = latency_us([&] { loom_round(1); });
    }
    const double ratio = raw.avg_gbps > 0 ? 100 * loom.avg_gbps / raw.avg_gbps : 0;
    results.push_back(
        {{"bytes", size},
         {"iters", iters},
         {"bw_avg_gbps", loom.avg_gbps},
         {"bw_peak_gbps", loom.peak_gbps},
         {"msg_rate_mpps", loom.mpps},
         {"latency_us", size <= 65536 ? nlohmann::json(loom.latency_us) : nlohmann::json(nullptr)},
         {"raw_bw_avg_gbps", raw.avg_gbps},
         {"raw_bw_peak_gbps", raw.peak_gbps},
         {"raw_msg_rate_mpps", raw.mpps},
         {"loom_over_raw", ratio / 100}});
    if (!a.json) {
      const std::string latency = size <= 65536 ? fmt::format("{:.1f}", loom.latency_us) : "-";
      std::printf("%10zu %8zu | %12.3f %12.3f %10.3f %9s | %12.3f %12.3f %10.3f | %5.0f%%\n", size,
                  iters, loom.peak_gbps, loom.avg_gbps, loom.mpps, latency.c_str(), raw.peak_gbps,
                  raw.avg_gbps, raw.mpps, ratio);
      std::fflush(stdout);
    }
  }
  ::close(fd);  // the server stops
  const double memcpy_rate = memcpy_gbps();
  const double tcp_rate = tcp_loopback_gbps();
  if (a.json) {
    nlohmann::json out = {
        {"benchmark", "loom-fabric-bw"},
        {"provider", offer.provider},
        {"domain", offer.domain},
        {"op", a.op},
        {"window", a.window},
        {"results", results},
        {"baselines",
         {{"memcpy_from_memory_gbps", memcpy_rate}, {"tcp_loopback_one_stream_gbps", tcp_rate}}}};
    std::cout << out.dump(2) << '\n';
  } else {
    std::printf(
        "baselines: memcpy from memory (256 MiB, one thread) %.2f GB/s; one-stream TCP loopback "
        "%.2f GB/s\n",
        memcpy_rate, tcp_rate);
  }
  return 0;
}

}  // namespace

constexpr const char* kUsage =
    "usage: loom-fabric-bw [options] [SERVER]   (no SERVER: be the server)\n"
    "  -p, --provider P       libfabric provider, e.g. \"tcp;ofi_rxm\", shm, \"verbs;ofi_rxm\" "
    "(fi_rma_bw -p)\n"
    "  -d, --interface I      the domain / NIC, e.g. mlx5_0, eth0, lo (fi_rma_bw -d, ib_write_bw "
    "-d)\n"
    "  -o, --op write|read    the RMA operation (fi_rma_bw -o)\n"
    "  -S, --size BYTES       one size, e.g. 4M (fi_rma_bw -S, ib_write_bw --size); -S all sweeps\n"
    "  -a, --all              sizes from 2 B to 8 MiB, doubling (ib_write_bw -a)\n"
    "  -I, -n, --iters N      operations per size (fi_rma_bw -I, ib_write_bw -n)\n"
    "  -W, -t, --window W     operations in flight (fi_rma_bw -W, ib_write_bw -t/--tx-depth)\n"
    "  -P, --port P           the TCP port names are exchanged on (fi_rma_bw -P, ib_write_bw "
    "--port)\n"
    "      --json             one JSON object instead of the table\n";

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(arg + " needs a value");
      return argv[++i];
    };
    auto is = [&](std::initializer_list<const char*> names) {
      return std::ranges::any_of(names, [&](const char* name) { return arg == name; });
    };
    if (is({"-p", "--provider"}))
      a.provider = value();
    else if (is({"-d", "--interface"}))
      a.interface = value();
    else if (is({"-o", "--op"}))
      a.op = value();
    else if (is({"-S", "--size"})) {
      const std::string size = value();
      if (size == "all")
        a.sweep = true;
      else
        a.size = check(parse_bytes(size), arg.c_str()).count();
    } else if (is({"-a", "--all"}))
      a.sweep = true;
    else if (is({"-I", "-n", "--iters"}))
      a.iters = std::stoul(value());
    else if (is({"-W", "-t", "--window", "--tx-depth"}))
      a.window = std::stoul(value());
    else if (is({"-P", "--port"}))
      a.port = std::stoi(value());
    else if (arg == "--json")
      a.json = true;
    else if (is({"-h", "--help"})) {
      std::printf("%s", kUsage);
      return 0;
    } else if (!arg.starts_with("-") && a.server.empty())
      a.server = arg;
    else
      die("unknown option " + arg + " (see --help)");
  }
  if (a.op != "write" && a.op != "read") die("-o/--op must be write or read, not " + a.op);
  if (a.size == 0 || a.size > kBuffer)
    die("-S/--size must be between 1 byte and " + format_bytes(Bytes(kBuffer)));
  return a.server.empty() ? run_server(a) : run_client(a);
}
