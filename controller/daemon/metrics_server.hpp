// loomctld's /metrics (metrics.address): cpp-httplib's server on a thread of its own; each
// scrape asks the core for its numbers (Core::metrics) through the inbox, as a call does.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "inbox.hpp"
#include "loom/common/error.hpp"

namespace httplib {
class Server;
}

namespace loom::controller {

class MetricsServer {
 public:
  // Listens on HOST:PORT (port 0: a free one) and serves until destroyed, which must be
  // before the inbox stops.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& address, Inbox& inbox);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsServer();
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace loom::controller
