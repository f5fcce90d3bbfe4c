#include "up_tls.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <set>

#include "loom/common/errno_text.hpp"
#include "run_command.hpp"

namespace loom::cli {

namespace fs = std::filesystem;

std::vector<std::string> UpTls::environment(const std::string& host) const {
  const Host& h = hosts.at(host);
  return {"LOOM_TLS_CA=" + ca.string(), "LOOM_TLS_CERT=" + h.cert.string(),
          "LOOM_TLS_KEY=" + h.key.string()};
}

Result<UpTls> make_up_tls(const fs::path& dir,
                          const std::map<std::string, std::vector<std::string>>& addresses) {
  std::error_code ec;
  fs::remove_all(dir, ec);  // a reused state directory's, for other addresses perhaps
  // Private while keys are written; then users may reach the CA by its name.
  if (::mkdir(dir.c_str(), 0700) != 0) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot make {}: {}", dir.string(), errno_text(errno)));
  }
  const std::vector<std::string> p256{"-newkey", "ec",      "-pkeyopt", "ec_paramgen_curve:P-256",
                                      "-nodes",  "-config", "/dev/null"};
  auto openssl = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"openssl", "req", "-x509"});
    argv.insert(argv.end(), p256.begin(), p256.end());
    return with_context(run_command(argv), "making loom up's TLS certificates");
  };
  UpTls tls;
  tls.ca = dir / "ca.pem";
  const fs::path ca_key = dir / "ca.key";
  LOOM_TRY(openssl({"-keyout", ca_key.string(), "-out", tls.ca.string(), "-days", "3650", "-subj",
                    "/CN=loom up CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"}));
  for (const auto& [host, reached_at] : addresses) {
    std::set<std::string> names(reached_at.begin(), reached_at.end());
    std::string san;
    for (const std::string& address : names) san += (san.empty() ? "IP:" : ",IP:") + address;
    UpTls::Host made{dir / (host + ".pem"), dir / (host + ".key")};
    LOOM_TRY(
        openssl({"-CA", tls.ca.string(), "-CAkey", ca_key.string(), "-keyout", made.key.string(),
                 "-out", made.cert.string(), "-days", "365", "-subj", "/CN=" + host, "-addext",
                 "subjectAltName=" + san, "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "extendedKeyUsage=serverAuth,clientAuth"}));
    ::chmod(made.key.c_str(), 0600);
    tls.hosts.emplace(host, std::move(made));
  }
  fs::remove(ca_key);
  ::chmod(tls.ca.c_str(), 0644);
  ::chmod(dir.c_str(), 0711);
  return tls;
}

}  // namespace loom::cli
