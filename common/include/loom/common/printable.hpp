// Text that users chose (job names, commands, file names in a staging's error), made safe to
// print on somebody else's terminal, and to carry where UTF-8 is required. Arguments, paths
// and environments are bytes on Unix: they travel as bytes, and are turned into text only
// where text is shown or required.
#pragma once

#include <string>
#include <string_view>

namespace loom {

// C0 controls and DEL as \n, \t, \r or \xHH; C1 controls (U+0080 to U+009F, which some
// terminals obey in UTF-8) as \u0080 to \u009f; each byte that is not part of valid UTF-8
// as \xHH; a backslash as \\, so that what is shown reads back one way. Everything else,
// other UTF-8 included, as it is. The result is valid UTF-8.
std::string printable(std::string_view text);

// Whether `text` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_utf8(std::string_view text);

// `text` with each byte that is not part of valid UTF-8 replaced by U+FFFD: for messages
// (an error naming a user's path) carried in a protobuf `string`, which must be UTF-8.
std::string valid_utf8(std::string_view text);

}  // namespace loom
