#include "loom/common/munge.hpp"

#include <fmt/format.h>
#include <grp.h>
#include <munge.h>
#include <pwd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

namespace loom {

Result<std::string> munge_credential() {
  char* credential = nullptr;
  const munge_err_t rc = munge_encode(&credential, nullptr, nullptr, 0);
  if (rc != EMUNGE_SUCCESS) {
    std::free(credential);
    return make_error(
        ErrorCode::kUnavailable,
        fmt::format("cannot get a Munge credential: {} (is munged running?)", munge_strerror(rc)));
  }
  std::string out(credential);
  std::free(credential);
  return out;
}

Result<Identity> munge_verify(std::string_view credential) {
  if (credential.empty())
    return make_error(ErrorCode::kUnauthenticated, "the request carries no Munge credential");
  const std::string text(credential);
  Identity id;
  const munge_err_t rc = munge_decode(text.c_str(), nullptr, nullptr, nullptr, &id.uid, &id.gid);
  if (rc != EMUNGE_SUCCESS) {
    return make_error(ErrorCode::kUnauthenticated,
                      fmt::format("the Munge credential is refused: {}", munge_strerror(rc)));
  }
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (::getpwuid_r(id.uid, &pw, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    id.user = pw.pw_name;
  } else {
    id.user = std::to_string(id.uid);
  }
  return id;
}

bool in_group(const Identity& identity, const std::string& group) {
  if (identity.uid == 0) return true;
  // getgrnam_r: credentials are checked on gRPC's threads at once; getgrnam shares a buffer.
  ::group entry{};
  ::group* g = nullptr;
  std::vector<char> buffer(16384);
  while (::getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &g) == ERANGE &&
         buffer.size() < (std::size_t{1} << 24))
    buffer.resize(buffer.size() * 2);  // a group of many members
  if (g == nullptr) return false;
  if (g->gr_gid == identity.gid) return true;
  for (char** member = g->gr_mem; *member != nullptr; ++member) {
    if (identity.user == *member) return true;
  }
  return false;
}

}  // namespace loom
