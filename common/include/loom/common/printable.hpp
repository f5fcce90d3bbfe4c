// Text that users chose (job names, commands, file names in a staging's error), made safe to
// print on somebody else's terminal: control characters, which a terminal would act on
// (escape sequences that retitle or rewrite the screen, a newline that forges a line of
// output), are written as C escapes instead.
#pragma once

#include <string>
#include <string_view>

namespace loom {

// C0 controls and DEL as \n, \t, \r or \xHH; C1 controls (U+0080 to U+009F, which some
// terminals obey in UTF-8) as \u0080 to \u009f; a backslash as \\, so that what is shown
// reads back one way. Everything else, other UTF-8 included, as it is.
std::string printable(std::string_view text);

}  // namespace loom
