#include "loom/common/printable.hpp"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Printable, ControlCharactersAreEscapedAndTheRestKept) {
  EXPECT_EQ(printable("plain name-1.h5"), "plain name-1.h5");
  EXPECT_EQ(printable("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07") << "a title-setting sequence";
  EXPECT_EQ(printable("job\nFAKE LINE"), "job\\nFAKE LINE") << "a forged line";
  EXPECT_EQ(printable("a\tb\rc\x7f"), "a\\tb\\rc\\x7f");
  EXPECT_EQ(printable("\xc2\x9b"
                      "2J"),
            "\\u009b2J")
      << "CSI as a UTF-8 C1 control";
  EXPECT_EQ(printable("caf\xc3\xa9 \xe2\x9c\x93"), "caf\xc3\xa9 \xe2\x9c\x93")
      << "other UTF-8 kept";
  EXPECT_EQ(printable("C:\\n"), "C:\\\\n") << "a backslash reads back one way";
  EXPECT_EQ(printable(std::string_view("a\0b", 3)), "a\\x00b");
}

}  // namespace
}  // namespace loom
