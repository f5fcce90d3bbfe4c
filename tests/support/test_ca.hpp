// A certificate authority and host certificates made as docs/admin-guide.md tells a site to
// make them (openssl, EC P-256), for the tests of TLS (loom/proto/tls.hpp).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "run.hpp"

namespace loom::testing {

class TestCa {
 public:
  struct Host {
    std::string cert, key;
  };

  // A CA named `name` in `dir` (made).
  TestCa(std::filesystem::path dir, const std::string& name) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    openssl({"-keyout", key(name), "-out", pem(name), "-days", "30", "-subj", "/CN=" + name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
             "keyUsage=critical,keyCertSign,cRLSign"});
    name_ = name;
  }

  std::string ca() const { return pem(name_); }

  // A host's certificate, signed by this CA, for the subject alternative names `san`.
  Host host(const std::string& name, const std::string& san = "IP:127.0.0.1") const {
    openssl({"-CA", pem(name_), "-CAkey", key(name_), "-keyout", key(name), "-out", pem(name),
             "-days", "30", "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san, "-addext",
             "basicConstraints=critical,CA:FALSE", "-addext",
             "extendedKeyUsage=serverAuth,clientAuth"});
    return {pem(name), key(name)};
  }

 private:
  std::string pem(const std::string& name) const { return (dir_ / (name + ".pem")).string(); }
  std::string key(const std::string& name) const { return (dir_ / (name + ".key")).string(); }
  static void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                               "ec_paramgen_curve:P-256", "-nodes", "-config", "/dev/null"});
    const Completed made = run(args);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }

  std::filesystem::path dir_;
  std::string name_;
};

}  // namespace loom::testing
