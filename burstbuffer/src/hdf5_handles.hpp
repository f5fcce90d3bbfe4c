// What the HDF5 adaptor's sources share (private to loom::hdf5_plan).
#pragma once

#include <hdf5.h>

#include <expected>
#include <string>
#include <utility>

#include "loom/common/error.hpp"

namespace loom::burstbuffer::detail {

// One HDF5 identifier, closed by its kind's close function.
class Hid {
 public:
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Hid(Hid&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Hid& operator=(Hid&&) = delete;
  ~Hid() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes it now, for the caller to see whether that failed.
  herr_t close() { return close_(std::exchange(id_, -1)); }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// HDF5 prints its error stack unless told not to; the errors come back as Loom's instead.
inline void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// A failed HDF5 call leaves its error stack on the thread; cleared here, since a thread that
// exits with one (a gRPC handler's) would leak its strings.
inline std::unexpected<Error> hdf5_error(ErrorCode code, std::string what) {
  H5Eclear2(H5E_DEFAULT);
  return make_error(code, std::move(what));
}

}  // namespace loom::burstbuffer::detail
