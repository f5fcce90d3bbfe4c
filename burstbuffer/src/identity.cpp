#include "loom/burstbuffer/identity.hpp"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "loom/common/errno_text.hpp"

namespace loom::burstbuffer {

namespace {

long set_groups(const std::vector<gid_t>& groups) {
  return ::syscall(SYS_setgroups, groups.size(), groups.data());
}

}  // namespace

std::vector<gid_t> user_groups(uid_t uid, gid_t gid) {
  std::vector<gid_t> groups{gid};
  std::vector<char> buffer(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    int count = 64;
    groups.resize(static_cast<std::size_t>(count));
    if (::getgrouplist(pw.pw_name, gid, groups.data(), &count) < 0) {
      groups.resize(static_cast<std::size_t>(count));
      ::getgrouplist(pw.pw_name, gid, groups.data(), &count);
    }
    groups.resize(static_cast<std::size_t>(count));
  }
  return groups;
}

Result<FsIdentity> FsIdentity::assume(uid_t uid, gid_t gid) {
  std::vector<gid_t> own(static_cast<std::size_t>(std::max(::getgroups(0, nullptr), 0)));
  if (::getgroups(static_cast<int>(own.size()), own.data()) < 0) own.clear();
  const std::vector<gid_t> groups = user_groups(uid, gid);
  // Groups first: changing them needs CAP_SETGID, which the fsuid change below leaves in
  // place, but do the riskiest step while nothing has changed yet.
  if (set_groups(groups) != 0) {
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("cannot take uid {}'s groups: {}", uid, loom::errno_text(errno)));
  }
  ::syscall(SYS_setfsgid, gid);
  ::syscall(SYS_setfsuid, uid);
  // setfsuid reports no error; read back that it took.
  if (static_cast<uid_t>(::syscall(SYS_setfsuid, static_cast<uid_t>(-1))) != uid) {
    FsIdentity restore(std::move(own));
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("cannot act as uid {} on files", uid));
  }
  return FsIdentity(std::move(own));
}

FsIdentity::~FsIdentity() {
  if (!active_) return;
  ::syscall(SYS_setfsuid, 0);
  ::syscall(SYS_setfsgid, 0);
  set_groups(groups_);
}

}  // namespace loom::burstbuffer
