// A FIFO given as a staged file blocked the node's stager for every user, and cancel did not
// help (issue 19): opening one for reading waits for a writer. Staging opens non-blocking
// and refuses anything but a regular file, naming it.
#include <sys/stat.h>

#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

TEST_F(DataPlaneTest, AFifoInTheExportIsRefusedAtOnceAndOthersAreStillServed) {
  ASSERT_EQ(::mkfifo((export_ / "pipe").c_str(), 0644), 0);
  auto fifo = fetch("/pipe", "pipe");
  ASSERT_FALSE(fifo);
  EXPECT_NE(fifo.error().message().find("/pipe is not a regular file"), std::string::npos)
      << fifo.error().to_string();
  write_random(export_ / "file.bin", 4096, 1);
  auto file = fetch("/file.bin", "file.bin");
  EXPECT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(leftovers(local_, {"file.bin"}), std::vector<std::string>{});
}

}  // namespace
}  // namespace loom::burstbuffer
