// Running a program from a test as a user would, and reading what it printed.
#pragma once

#include <string>
#include <vector>

namespace loom::testing {

struct Completed {
  int exit_code = -1;  // 128 + signal when killed by one, as the shells report it
  std::string out;
  std::string err;
};

// Runs argv[0] (searched in PATH) with the given arguments and waits for it. stdin is
// /dev/null; stdout and stderr are captured whole.
Completed run(const std::vector<std::string>& argv);

// Path of a program built by this tree, e.g. built("cli/loom").
std::string built(const std::string& relative);

// Non-empty lines of text.
std::vector<std::string> lines(const std::string& text);

// A file under /proc/PID whole, or "" once that process has gone: a process that exits
// while it is read makes read(2) fail with ESRCH, which std::ifstream throws on.
std::string proc_file(const std::string& path);

}  // namespace loom::testing
