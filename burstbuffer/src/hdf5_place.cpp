// place_raw_data (hdf5_plan.hpp): a fetched skeleton's raw data allocated and indexed
// through a file driver that writes what HDF5 writes, but for raw data.
#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <vector>

#include "hdf5_handles.hpp"
#include "loom/burstbuffer/hdf5_plan.hpp"

namespace loom::burstbuffer {

namespace {

namespace fs = std::filesystem;
using detail::hdf5_error;
using detail::Hid;
using detail::quiet;

// The driver's file: HDF5's part first, as in every driver, then the sec2 (POSIX) file that
// does the work.
struct MetadataOnly {
  H5FD_t pub;
  H5FD_t* inner;
};

H5FD_t* inner(const H5FD_t* file) {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): HDF5's driver layout
  return reinterpret_cast<const MetadataOnly*>(file)->inner;
}

H5FD_t* open_file(const char* name, unsigned flags, hid_t, haddr_t maxaddr) {
  const Hid sec2(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (H5Pset_fapl_sec2(sec2.get()) < 0) return nullptr;
  H5FD_t* file = H5FDopen(name, flags, sec2.get(), maxaddr);
  if (file == nullptr) return nullptr;
  auto* mine = new MetadataOnly{};
  mine->inner = file;
  return &mine->pub;
}

herr_t close_file(H5FD_t* file) {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): made by open_file
  auto* mine = reinterpret_cast<MetadataOnly*>(file);
  const herr_t closed = H5FDclose(mine->inner);
  delete mine;
  return closed;
}

herr_t query(const H5FD_t* file, unsigned long* flags) {
  if (file == nullptr) return H5FDdriver_query(H5FD_SEC2, flags);
  return H5FDquery(inner(file), flags) < 0 ? -1 : 0;
}

// Raw data is dropped: where it goes is all the stager needs, and it writes the bytes
// itself. The file is sparse there until it does (sec2 extends it to its end at close).
herr_t write_metadata(H5FD_t* file, H5FD_mem_t type, hid_t dxpl, haddr_t address, size_t size,
                      const void* buffer) {
  if (type == H5FD_MEM_DRAW) return 0;
  return H5FDwrite(inner(file), type, dxpl, address, size, buffer);
}

const H5FD_class_t kMetadataOnly = {
    .name = "loom_metadata_only",
    .maxaddr = (haddr_t{1} << 63) - 1,  // sec2's: off_t's
    .fc_degree = H5F_CLOSE_WEAK,
    .terminate = nullptr,
    .sb_size = nullptr,
    .sb_encode = nullptr,
    .sb_decode = nullptr,
    .fapl_size = 0,
    .fapl_get = nullptr,
    .fapl_copy = nullptr,
    .fapl_free = nullptr,
    .dxpl_size = 0,
    .dxpl_copy = nullptr,
    .dxpl_free = nullptr,
    .open = open_file,
    .close = close_file,
    .cmp = [](const H5FD_t* a, const H5FD_t* b) { return H5FDcmp(inner(a), inner(b)); },
    .query = query,
    .get_type_map = nullptr,
    .alloc = nullptr,
    .free = nullptr,
    .get_eoa = [](const H5FD_t* f, H5FD_mem_t type) { return H5FDget_eoa(inner(f), type); },
    .set_eoa = [](H5FD_t* f, H5FD_mem_t type, haddr_t a) { return H5FDset_eoa(inner(f), type, a); },
    .get_eof = [](const H5FD_t* f, H5FD_mem_t type) { return H5FDget_eof(inner(f), type); },
    .get_handle = [](H5FD_t* f, hid_t fapl,
                     void** handle) { return H5FDget_vfd_handle(inner(f), fapl, handle); },
    .read = [](H5FD_t* f, H5FD_mem_t type, hid_t dxpl, haddr_t a, size_t size,
               void* buffer) { return H5FDread(inner(f), type, dxpl, a, size, buffer); },
    .write = write_metadata,
    .flush = [](H5FD_t* f, hid_t dxpl,
                hbool_t closing) { return H5FDflush(inner(f), dxpl, closing); },
    .truncate = [](H5FD_t* f, hid_t dxpl,
                   hbool_t closing) { return H5FDtruncate(inner(f), dxpl, closing); },
    .lock = [](H5FD_t* f, hbool_t rw) { return H5FDlock(inner(f), rw); },
    .unlock = [](H5FD_t* f) { return H5FDunlock(inner(f)); },
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

Status place(hid_t file, DatasetPlan& p) {
  Hid d(H5Dopen2(file, p.path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid())
    return hdf5_error(ErrorCode::kInvalidArgument,
                      fmt::format("dataset {} is missing from the skeleton", p.path));
  Hid space(H5Dget_space(d.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (p.kind == DatasetPlan::Kind::kContiguous) {
    if (p.size == 0) return {};  // never written at the source: fill values here too
    // Writing one element allocates the whole contiguous block; its offset is where the
    // source's bytes go.
    Hid type(H5Dget_type(d.get()), H5Tclose);
    if (rank > 0) {
      const std::vector<hsize_t> start(static_cast<std::size_t>(rank), 0),
          count(static_cast<std::size_t>(rank), 1);
      H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                          nullptr);
    }
    Hid one(H5Screate(H5S_SCALAR), H5Sclose);
    const std::vector<std::byte> zero(H5Tget_size(type.get()));
    if (H5Dwrite(d.get(), type.get(), one.get(), space.get(), H5P_DEFAULT, zero.data()) < 0 ||
        H5Dget_offset(d.get()) == HADDR_UNDEF) {
      return hdf5_error(ErrorCode::kInternal, fmt::format("allocating dataset {}", p.path));
    }
    p.address = H5Dget_offset(d.get());
    return {};
  }
  std::vector<std::byte> unwritten;  // H5Dwrite_chunk's bytes, which the driver drops
  for (ChunkExtent& c : p.chunks) {
    if (c.coords.size() != static_cast<std::size_t>(rank)) {
      return hdf5_error(ErrorCode::kInvalidArgument,
                        fmt::format("a chunk of dataset {} has {} coordinates for {} dimensions",
                                    p.path, c.coords.size(), rank));
    }
    unwritten.resize(std::max<std::size_t>(unwritten.size(), c.size));
    const std::vector<hsize_t> coords(c.coords.begin(), c.coords.end());
    unsigned mask = 0;
    haddr_t address = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dwrite_chunk(d.get(), H5P_DEFAULT, c.filter_mask, coords.data(), c.size,
                       unwritten.data()) < 0 ||
        H5Dget_chunk_info_by_coord(d.get(), coords.data(), &mask, &address, &size) < 0 ||
        address == HADDR_UNDEF || size != c.size) {
      return hdf5_error(ErrorCode::kInternal,
                        fmt::format("allocating a chunk of dataset {}", p.path));
    }
    c.address = address;
  }
  return {};
}

}  // namespace

Result<SkeletonPlan> place_raw_data(const fs::path& skeleton, const SkeletonPlan& plan) {
  quiet();
  static const hid_t kDriver = H5FDregister(&kMetadataOnly);
  const Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (kDriver < 0 || H5Pset_driver(fapl.get(), kDriver, nullptr) < 0)
    return hdf5_error(ErrorCode::kInternal, "cannot set up HDF5's file driver");
  Hid file(H5Fopen(skeleton.c_str(), H5F_ACC_RDWR, fapl.get()), H5Fclose);
  if (!file.valid())
    return hdf5_error(ErrorCode::kInvalidArgument, "the staged skeleton is not an HDF5 file");
  SkeletonPlan placed = plan;
  for (DatasetPlan& p : placed.datasets) {
    if (p.kind != DatasetPlan::Kind::kCopied) LOOM_TRY(place(file.get(), p));
  }
  if (file.close() < 0) return hdf5_error(ErrorCode::kInternal, "writing the skeleton");
  return placed;
}

}  // namespace loom::burstbuffer
