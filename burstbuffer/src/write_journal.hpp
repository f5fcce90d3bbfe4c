// What a storage agent is writing, kept beside its job records: one small record per file
// being written, made before its temporary name exists and removed once that name is
// renamed into place or unlinked. A storage agent killed mid-write leaves the temporary
// file in the user's directory and its record here; the next start removes both
// (WriteJournal::sweep), as the file's writer. The export is not walked: it may hold
// millions of files, and other agents' temporary files, which are theirs to sweep.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "loom/common/error.hpp"

namespace loom::burstbuffer {

struct PendingWrite {
  uid_t uid = 0;
  gid_t gid = 0;
  std::filesystem::path dir;  // its directory, beneath the export root ("." for the root)
  std::string temp;           // its temporary name there
};

class WriteJournal {
 public:
  // `dir` is made (0700) when missing.
  static Result<WriteJournal> open(const std::filesystem::path& dir);

  // Recorded before the temporary file is made, under `id` (a handle's token).
  Status begin(const std::string& id, const PendingWrite& write) const;
  // The temporary name is gone (renamed into place, or unlinked).
  void end(const std::string& id) const;

  // Removes every recorded temporary file beneath `export_root`, as its writer (what the
  // writer could not reach is left, and logged), and the records: how many files were
  // removed. A record that does not parse is removed and logged.
  std::size_t sweep(int export_root) const;

 private:
  explicit WriteJournal(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

}  // namespace loom::burstbuffer
