// loom up's TLS: a CA of its own and a certificate per host, made with openssl as
// docs/admin-guide.md tells a site to make its own (EC P-256 keys: quick to make; the
// hosts' addresses as IP subject alternative names).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::cli {

struct UpTls {
  std::filesystem::path ca;  // readable by every user: the CLI checks the controller with it
  struct Host {
    std::filesystem::path cert, key;  // the key root's alone
  };
  std::map<std::string, Host> hosts;

  // What a daemon of `host` is started with: LOOM_TLS_CA, LOOM_TLS_CERT, LOOM_TLS_KEY.
  std::vector<std::string> environment(const std::string& host) const;
};

// Made anew in `dir` (a directory only root may write), for each host's name and the
// addresses it is reached at. The CA's key is removed once the certificates are signed:
// nothing more is signed with it.
Result<UpTls> make_up_tls(const std::filesystem::path& dir,
                          const std::map<std::string, std::vector<std::string>>& addresses);

}  // namespace loom::cli
