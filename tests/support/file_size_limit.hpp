// A full disk for this process alone, with no filesystem of its own and no root: while a
// FileSizeLimit lives, writes to regular files past `bytes` fail (EFBIG; SIGXFSZ is ignored),
// as they fail on a disk with no room. Process-wide: hold it only while one thread writes.
#pragma once

#include <sys/resource.h>

#include <csignal>

namespace loom::testing {

class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) : handler_(std::signal(SIGXFSZ, SIG_IGN)) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limited = old_;
    limited.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  void (*handler_)(int);
};

}  // namespace loom::testing
