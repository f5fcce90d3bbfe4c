// Who is asking, proven by Munge (as Slurm does): a client encodes a credential with the
// local munged, the controller decodes it and learns the client's uid and gid. A
// credential decodes once: a replayed one is refused.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "loom/common/error.hpp"

namespace loom {

// A fresh credential for this process's uid and gid.
Result<std::string> munge_credential();

struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user;  // the uid's name on this host
};

// Decodes a credential; kUnauthenticated (naming Munge's reason) for a forged, expired,
// replayed or missing one.
Result<Identity> munge_verify(std::string_view credential);

// Whether the user is root or a member of the group (by primary group or membership).
bool in_group(const Identity& identity, const std::string& group);

}  // namespace loom
