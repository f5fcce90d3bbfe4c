#include "loom/proto/tls.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "loom/common/errno_text.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::tls {

namespace {

struct Pem {
  std::string key;  // "tls.ca": what errors name
  std::string path;
  std::string text;
};

Error bad(const Pem& pem, std::string_view what) {
  return {ErrorCode::kInvalidArgument, fmt::format("{} {}: {}", pem.key, pem.path, what)};
}

// A PEM file; a private key must be a regular file only its owner may read. Links are
// followed, as ssh follows them for host keys: sites link certificates a renewal replaces.
Result<Pem> read_pem(std::string key, const std::string& path, bool secret) {
  Pem pem{std::move(key), path, {}};
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return std::unexpected(bad(pem, fmt::format("cannot open: {}", errno_text(errno))));
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode))
    return std::unexpected(bad(pem, "not a regular file"));
  if (secret && (info.st_mode & 077) != 0) {
    return std::unexpected(
        bad(pem, fmt::format("group or others may read it (mode {:04o}): it must be 0600 or "
                             "stricter, as a private key",
                             info.st_mode & 07777)));
  }
  if (info.st_size > (1 << 20)) return std::unexpected(bad(pem, "larger than 1 MiB"));
  pem.text.resize(static_cast<std::size_t>(info.st_size));
  std::size_t done = 0;
  while (done < pem.text.size()) {
    const ssize_t n = ::read(fd.get(), pem.text.data() + done, pem.text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::unexpected(bad(pem, fmt::format("cannot read: {}", errno_text(errno))));
    done += static_cast<std::size_t>(n);
  }
  return pem;
}

// OpenSSL's last error, for a message; its queue is emptied.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "not PEM";
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  return text.data();
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Cert = std::unique_ptr<X509, decltype(&X509_free)>;
using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

Bio bio_of(const Pem& pem) {
  return {BIO_new_mem_buf(pem.text.data(), static_cast<int>(pem.text.size())), &BIO_free};
}

Result<Cert> certificate(const Pem& pem) {
  Bio bio = bio_of(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) return std::unexpected(bad(pem, "not a PEM certificate (" + openssl_error() + ")"));
  return cert;
}

// What a misconfigured host would otherwise learn only from a handshake that fails on the
// far side: the certificate is the key's, the CA signed it, and it is valid now.
Status check_pair(const Pem& ca, const Pem& cert, const Pem& key) {
  Cert own = LOOM_TRY(certificate(cert));
  Bio key_bio = bio_of(key);
  Key private_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr),
                  &EVP_PKEY_free);
  if (!private_key)
    return std::unexpected(bad(key, "not a PEM private key (" + openssl_error() + ")"));
  if (X509_check_private_key(own.get(), private_key.get()) != 1) {
    ERR_clear_error();
    return std::unexpected(bad(key, fmt::format("not the key of tls.cert {}", cert.path)));
  }
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), &X509_STORE_free);
  Bio ca_bio = bio_of(ca);
  int authorities = 0;
  while (X509* one = PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store.get(), one);  // the store takes its own reference
    X509_free(one);
    ++authorities;
  }
  ERR_clear_error();  // the end of the file reads as an error
  if (authorities == 0) return std::unexpected(bad(ca, "holds no PEM certificate"));
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> verify(X509_STORE_CTX_new(),
                                                                         &X509_STORE_CTX_free);
  X509_STORE_CTX_init(verify.get(), store.get(), own.get(), nullptr);
  if (X509_verify_cert(verify.get()) != 1) {
    const int why = X509_STORE_CTX_get_error(verify.get());
    ERR_clear_error();
    return std::unexpected(bad(cert, fmt::format("does not verify against tls.ca {}: {}", ca.path,
                                                 X509_verify_cert_error_string(why))));
  }
  return {};
}

}  // namespace

Result<Tls> Tls::load(const Config::Tls& files, Role role) {
  if (files.ca.empty()) {
    if (!files.cert.empty() || !files.key.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "tls.cert and tls.key need tls.ca, the CA that signed them");
    }
    return Tls{};
  }
  const Pem ca = LOOM_TRY(read_pem("tls.ca", files.ca, false));
  LOOM_TRY(certificate(ca));
  Tls tls;
  grpc::SslCredentialsOptions client;
  client.pem_root_certs = ca.text;
  tls.description_ = fmt::format("TLS (CA {}", ca.path);
  if (role == Role::kDaemon) {
    if (files.cert.empty() || files.key.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("tls.ca is set ({}) but tls.{} is not: a daemon presents its "
                                    "host's certificate and key",
                                    ca.path, files.cert.empty() ? "cert" : "key"));
    }
    const Pem cert = LOOM_TRY(read_pem("tls.cert", files.cert, false));
    const Pem key = LOOM_TRY(read_pem("tls.key", files.key, true));
    LOOM_TRY(check_pair(ca, cert, key));
    client.pem_cert_chain = cert.text;
    client.pem_private_key = key.text;
    // Asked, not required: users' calls come without one (Munge says who they are); the
    // services require one where only a host may call (from_cluster_host).
    grpc::SslServerCredentialsOptions server(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    server.pem_root_certs = ca.text;
    server.pem_key_cert_pairs.push_back({key.text, cert.text});
    tls.server_ = grpc::SslServerCredentials(server);
    tls.description_ += fmt::format(", certificate {}", cert.path);
  }
  tls.description_ += ")";
  tls.channel_ = grpc::SslCredentials(client);
  return tls;
}

std::shared_ptr<grpc::ChannelCredentials> Tls::channel() const {
  return channel_ ? channel_ : grpc::InsecureChannelCredentials();
}

std::shared_ptr<grpc::ServerCredentials> Tls::server() const {
  LOOM_CHECK(!channel_ || server_, "a client's TLS configuration cannot serve");
  return server_ ? server_ : grpc::InsecureServerCredentials();
}

bool Tls::from_cluster_host(const grpc::ServerContextBase& context) const {
  if (!enabled()) return true;
  // With a CA, a certificate the client showed was verified against it during the
  // handshake: its peer identity is set only then.
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  return auth != nullptr && auth->IsPeerAuthenticated();
}

std::string Tls::describe() const {
  return enabled() ? description_
                   : "plain: tls.ca is not set, so anybody on the network reads and changes what "
                     "gRPC carries (Munge still proves who calls)";
}

void Tls::log() const {
  if (enabled()) {
    spdlog::info("gRPC over {}", describe());
  } else {
    spdlog::warn("gRPC is {}", describe());
  }
}

}  // namespace loom::tls
