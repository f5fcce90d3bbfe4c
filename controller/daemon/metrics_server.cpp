#include "metrics_server.hpp"

#include <fmt/format.h>
#include <httplib.h>

#include <charconv>
#include <string_view>

namespace loom::controller {

MetricsServer::MetricsServer() : server_(std::make_unique<httplib::Server>()) {}

MetricsServer::~MetricsServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address,
                                                            Inbox& inbox) {
  const std::size_t colon = address.rfind(':');
  int port = -1;
  if (colon != std::string::npos) {
    const std::string_view digits = std::string_view(address).substr(colon + 1);
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (error != std::errc() || end != digits.data() + digits.size()) port = -1;
  }
  if (port < 0 || port > 65535)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("metrics.address {}: must be HOST:PORT", address));
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);  // [::1]
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer());
  server->server_->Get("/metrics", [&inbox](const httplib::Request&, httplib::Response& response) {
    response.set_content(inbox.call([](Core& core) { return core.metrics(); }),
                         "text/plain; version=0.0.4; charset=utf-8");
  });
  server->port_ = port == 0 ? server->server_->bind_to_any_port(host)
                            : (server->server_->bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0)
    return make_error(ErrorCode::kUnavailable,
                      fmt::format("metrics.address {}: cannot listen there", address));
  server->thread_ = std::thread([s = server->server_.get()] { s->listen_after_bind(); });
  return server;
}

}  // namespace loom::controller
