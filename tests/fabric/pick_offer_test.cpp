// Which of a provider's offers the data plane takes when fabric.interface names none, or
// names one with several addresses: offers built as libfabric lists them (fi_allocinfo),
// in the orders a host can give.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <rdma/fabric.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "loom/fabric/fabric.hpp"

namespace loom::fabric {
namespace {

struct Address {
  std::string domain;
  std::string ip;  // IPv4 or IPv6
};

// A list of offers, one per address, in this order; freed with the test.
class Offers {
 public:
  explicit Offers(const std::vector<Address>& addresses) {
    fi_info** tail = &head_;
    for (const Address& a : addresses) {
      fi_info* info = fi_allocinfo();
      info->domain_attr->name = ::strdup(a.domain.c_str());
      if (a.ip.find(':') != std::string::npos) {
        auto* in6 = static_cast<sockaddr_in6*>(std::calloc(1, sizeof(sockaddr_in6)));
        in6->sin6_family = AF_INET6;
        EXPECT_EQ(::inet_pton(AF_INET6, a.ip.c_str(), &in6->sin6_addr), 1) << a.ip;
        info->addr_format = FI_SOCKADDR_IN6;
        info->src_addr = in6;
        info->src_addrlen = sizeof(sockaddr_in6);
      } else {
        auto* in = static_cast<sockaddr_in*>(std::calloc(1, sizeof(sockaddr_in)));
        in->sin_family = AF_INET;
        EXPECT_EQ(::inet_pton(AF_INET, a.ip.c_str(), &in->sin_addr), 1) << a.ip;
        info->addr_format = FI_SOCKADDR_IN;
        info->src_addr = in;
        info->src_addrlen = sizeof(sockaddr_in);
      }
      *tail = info;
      tail = &info->next;
    }
  }
  ~Offers() { fi_freeinfo(head_); }
  Offers(const Offers&) = delete;
  Offers& operator=(const Offers&) = delete;

  // The domain and address of the one picked ("" when none).
  std::string pick(std::string_view interface) const {
    const fi_info* chosen = pick_offer(head_, interface);
    if (chosen == nullptr) return "";
    char text[INET6_ADDRSTRLEN] = {};
    if (chosen->addr_format == FI_SOCKADDR_IN6) {
      ::inet_ntop(AF_INET6, &static_cast<const sockaddr_in6*>(chosen->src_addr)->sin6_addr, text,
                  sizeof text);
    } else {
      ::inet_ntop(AF_INET, &static_cast<const sockaddr_in*>(chosen->src_addr)->sin_addr, text,
                  sizeof text);
    }
    return std::string(chosen->domain_attr->name) + " " + text;
  }

 private:
  fi_info* head_ = nullptr;
};

// A node running network namespaces (loom up --netns, containers) has veths and bridges
// whose only address in its own namespace is link-local IPv6, and the provider may list
// them first (it sorts by link speed). Picking one gave an endpoint that a storage agent
// on IPv4 refused: "fi_av_insert: the peer's endpoint name (28 bytes) was refused".
TEST(PickOffer, ALinkLocalAddressIsNeverTheDefaultWhenAnotherWillDo) {
  const Offers offers({{"lm0-7-0", "fe80::1"},
                       {"eth0", "fe80::fc:ff:fe00:1"},
                       {"eth0", "192.0.2.2"},
                       {"lo", "127.0.0.1"},
                       {"lo", "::1"}});
  EXPECT_EQ(offers.pick(""), "eth0 192.0.2.2");
}

TEST(PickOffer, OnANamedInterfaceIPv4GoesBeforeIPv6) {
  const Offers offers(
      {{"eth0", "2001:db8::2"}, {"eth0", "192.0.2.2"}, {"lo", "::1"}, {"lo", "127.0.0.1"}});
  EXPECT_EQ(offers.pick("lo"), "lo 127.0.0.1");
  EXPECT_EQ(offers.pick("eth0"), "eth0 192.0.2.2");
  EXPECT_EQ(offers.pick("ib0"), "") << "no offer on an interface the host lacks";
}

TEST(PickOffer, AnIPv6OnlyHostStillGetsItsGlobalAddressAndLoopbackComesLast) {
  const Offers offers({{"lo", "::1"}, {"eth0", "fe80::2"}, {"eth0", "2001:db8::2"}});
  EXPECT_EQ(offers.pick(""), "eth0 2001:db8::2");
  const Offers only_loopback({{"lo", "::1"}, {"lo", "127.0.0.1"}});
  EXPECT_EQ(only_loopback.pick(""), "lo 127.0.0.1") << "a one-host cluster";
}

}  // namespace
}  // namespace loom::fabric
