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

// Bytes that are not UTF-8 (a Latin-1 name, a cut sequence, an overlong form, a surrogate)
// are shown as \xHH, each: what is printed is valid UTF-8, and says which bytes they were.
TEST(Printable, BytesThatAreNotUtf8AreEscapedOneByOne) {
  EXPECT_EQ(printable("caf\xe9"), "caf\\xe9");
  EXPECT_EQ(printable("\xe2\x9c"), "\\xe2\\x9c") << "a sequence cut short";
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf") << "an overlong '/'";
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80") << "a surrogate";
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80") << "past U+10FFFF";
  EXPECT_EQ(printable("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80") << "four bytes, valid";
  EXPECT_TRUE(is_utf8(printable("\xff\xfe caf\xe9 \xc3")));
}

TEST(Utf8, ValidTextIsKeptAndEveryOtherByteReplaced) {
  EXPECT_TRUE(is_utf8("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_utf8("caf\xe9"));
  EXPECT_FALSE(is_utf8("\xc3"));
  EXPECT_FALSE(is_utf8("\xed\xbf\xbf"));
  EXPECT_EQ(valid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(valid_utf8("cannot run caf\xe9: no such file"),
            "cannot run caf\xef\xbf\xbd: no such file");
  EXPECT_EQ(valid_utf8("\xe2\x9c"), "\xef\xbf\xbd\xef\xbf\xbd");
}

}  // namespace
}  // namespace loom
