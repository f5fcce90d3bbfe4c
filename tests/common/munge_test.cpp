#include "loom/common/munge.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

namespace loom {
namespace {

// munged is started by scripts/install-deps.sh, as Munge is on every Loom node.
TEST(Munge, ACredentialProvesWhoMadeItOnce) {
  auto credential = munge_credential();
  ASSERT_TRUE(credential.has_value()) << credential.error().to_string();
  auto identity = munge_verify(*credential);
  ASSERT_TRUE(identity.has_value()) << identity.error().to_string();
  EXPECT_EQ(identity->uid, ::getuid());
  EXPECT_EQ(identity->gid, ::getgid());
  auto replayed = munge_verify(*credential);
  ASSERT_FALSE(replayed.has_value()) << "a credential decodes once";
  EXPECT_EQ(replayed.error().code(), ErrorCode::kUnauthenticated);
}

TEST(Munge, ForgedOrMissingCredentialsAreRefused) {
  auto forged = munge_verify("MUNGE:AwQFAAD1forgedforgedforged:");
  ASSERT_FALSE(forged.has_value());
  EXPECT_EQ(forged.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(forged.error().message().rfind("the Munge credential is refused: ", 0), 0u)
      << forged.error().message();
  auto missing = munge_verify("");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().message(), "the request carries no Munge credential");
}

TEST(Munge, AdminsAreRootAndTheGroupsMembers) {
  EXPECT_TRUE(in_group(Identity{0, 0, "root"}, "loomadm"));
  EXPECT_FALSE(in_group(Identity{1001, 1001, "loom-alice"}, "loomadm"));
  EXPECT_FALSE(in_group(Identity{1001, 1001, "loom-alice"}, "no-such-group"));
}

}  // namespace
}  // namespace loom
