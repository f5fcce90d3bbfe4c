#include "loom/burstbuffer/hdf5_plan.hpp"

#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

#include "hdf5_handles.hpp"
#include "loom/common/errno_text.hpp"

namespace loom::burstbuffer {

namespace {

namespace fs = std::filesystem;
using detail::hdf5_error;
using detail::Hid;
using detail::quiet;

// Contiguous datasets this small are copied into the skeleton rather than moved by extent.
constexpr hsize_t kCopyBelow = 64 << 10;

// Variable-length data anywhere in the type: its bytes live in the global heap.
bool has_vlen(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_VLEN:
      return true;
    case H5T_STRING:
      return H5Tis_variable_str(type) > 0;
    case H5T_ARRAY: {
      Hid base(H5Tget_super(type), H5Tclose);
      return has_vlen(base.get());
    }
    case H5T_COMPOUND: {
      for (int i = 0; i < H5Tget_nmembers(type); ++i) {
        Hid member(H5Tget_member_type(type, static_cast<unsigned>(i)), H5Tclose);
        if (has_vlen(member.get())) return true;
      }
      return false;
    }
    default:
      return false;
  }
}

bool has_reference(hid_t type) { return H5Tdetect_class(type, H5T_REFERENCE) > 0; }

// A transient copy of a committed (named) type: the skeleton has no such named object.
Hid transient(hid_t type) { return {H5Tcopy(type), H5Tclose}; }

struct AttributeCopy {
  hid_t destination;
  std::string object;
  std::vector<std::string>* notes;
  std::optional<Error> error;
};

herr_t copy_attribute(hid_t source, const char* name, const H5A_info_t*, void* data) {
  auto* copy = static_cast<AttributeCopy*>(data);
  Hid attribute(H5Aopen(source, name, H5P_DEFAULT), H5Aclose);
  Hid type(H5Aget_type(attribute.get()), H5Tclose);
  if (has_reference(type.get())) {
    copy->notes->push_back(fmt::format("attribute {} of {} references other objects: not carried",
                                       name, copy->object));
    return 0;
  }
  Hid space(H5Aget_space(attribute.get()), H5Sclose);
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  std::vector<std::byte> buffer(
      H5Tget_size(type.get()) * static_cast<std::size_t>(std::max<hssize_t>(points, 0)) + 1);
  Hid plain = transient(type.get());
  if (H5Aread(attribute.get(), plain.get(), buffer.data()) < 0) {
    copy->error =
        Error(ErrorCode::kInternal, fmt::format("reading attribute {} of {}", name, copy->object));
    return -1;
  }
  Hid made(H5Acreate2(copy->destination, name, plain.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
           H5Aclose);
  const bool written = made.valid() && H5Awrite(made.get(), plain.get(), buffer.data()) >= 0;
  if (has_vlen(plain.get())) H5Dvlen_reclaim(plain.get(), space.get(), H5P_DEFAULT, buffer.data());
  if (!written) {
    copy->error =
        Error(ErrorCode::kInternal, fmt::format("writing attribute {} of {}", name, copy->object));
    return -1;
  }
  return 0;
}

Status copy_attributes(hid_t source, hid_t destination, const std::string& object,
                       std::vector<std::string>& notes) {
  AttributeCopy copy{destination, object, &notes, std::nullopt};
  if (H5Aiterate2(source, H5_INDEX_NAME, H5_ITER_INC, nullptr, copy_attribute, &copy) < 0) {
    const Error e = copy.error.value_or(
        Error(ErrorCode::kInternal, fmt::format("copying the attributes of {}", object)));
    return hdf5_error(e.code(), e.message());
  }
  return {};
}

// Whether `path` names an object of this file, every link on the way checked before it is
// followed: an external link (or a user-defined one) would open another file, which may lie
// outside the export, so it is refused, naming the link; soft links are followed to their
// targets, checked the same way.
Result<bool> exists_here(hid_t file, const std::string& path, int depth = 0) {
  if (depth > 16) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{}: soft links nest too deep", path));
  }
  for (std::size_t at = path.find('/', 1);; at = path.find('/', at + 1)) {
    const std::string prefix = path.substr(0, at);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    H5L_info_t info{};
    if (H5Lget_info(file, prefix.c_str(), &info, H5P_DEFAULT) < 0) return false;
    if (info.type == H5L_TYPE_SOFT) {
      std::string target(info.u.val_size, '\0');
      if (H5Lget_val(file, prefix.c_str(), target.data(), target.size(), H5P_DEFAULT) < 0)
        return false;
      target.resize(std::strlen(target.c_str()));
      if (!target.starts_with('/'))
        target.insert(0, prefix, 0, prefix.rfind('/') + 1);  // relative to its group
      if (!LOOM_TRY(exists_here(file, target, depth + 1))) return false;
    } else if (info.type != H5L_TYPE_HARD) {
      return hdf5_error(ErrorCode::kInvalidArgument,
                        fmt::format("{} is an external link into another file; staging reads "
                                    "only the file named (stage the other file itself)",
                                    prefix));
    }
    if (at == std::string::npos) return true;
  }
}

// The groups above `path` in the skeleton, made as they are in the source, attributes too.
Status make_groups(hid_t source, hid_t skeleton, const std::string& path,
                   std::vector<std::string>& notes) {
  for (std::size_t at = path.find('/', 1); at != std::string::npos; at = path.find('/', at + 1)) {
    const std::string group = path.substr(0, at);
    if (H5Lexists(skeleton, group.c_str(), H5P_DEFAULT) > 0) continue;
    Hid from(H5Gopen2(source, group.c_str(), H5P_DEFAULT), H5Gclose);
    Hid made(H5Gcreate2(skeleton, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    if (!from.valid() || !made.valid())
      return hdf5_error(ErrorCode::kInternal, fmt::format("making group {}", group));
    LOOM_TRY(copy_attributes(from.get(), made.get(), group, notes));
  }
  return {};
}

}  // namespace

Result<SkeletonPlan> write_skeleton(const fs::path& source, std::span<const std::string> datasets,
                                    int skeleton_fd) {
  quiet();
  Hid src(H5Fopen(source.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!src.valid()) return hdf5_error(ErrorCode::kInvalidArgument, "it is not an HDF5 file");
  Hid in_memory(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_core(in_memory.get(), std::size_t{1} << 20, false);  // no backing store
  // The name is HDF5's only: no file is created under it. Unique, since HDF5 refuses to
  // create a file by the name of one it has open (skeletons made at once for several hosts).
  static std::atomic<std::uint64_t> made{0};
  const std::string name = fmt::format("loom-skeleton-{}", made.fetch_add(1));
  Hid dst(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, in_memory.get()), H5Fclose);
  if (!dst.valid()) return hdf5_error(ErrorCode::kInternal, "cannot make the skeleton");
  SkeletonPlan plan;
  for (const std::string& path : datasets) {
    if (!LOOM_TRY(exists_here(src.get(), path)))
      return hdf5_error(ErrorCode::kNotFound, fmt::format("dataset {} does not exist", path));
    Hid d(H5Dopen2(src.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.valid())
      return hdf5_error(ErrorCode::kInvalidArgument, fmt::format("{} is not a dataset", path));
    Hid type(H5Dget_type(d.get()), H5Tclose);
    if (has_reference(type.get())) {
      return hdf5_error(ErrorCode::kInvalidArgument,
                        fmt::format("dataset {} holds object or region references, which do not "
                                    "survive a subset; stage the whole file",
                                    path));
    }
    Hid dcpl(H5Dget_create_plist(d.get()), H5Pclose);
    if (H5Pget_external_count(dcpl.get()) > 0) {
      return hdf5_error(
          ErrorCode::kInvalidArgument,
          fmt::format("dataset {} keeps its data in external files; stage those files", path));
    }
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    if (layout == H5D_VIRTUAL) {
      return hdf5_error(
          ErrorCode::kInvalidArgument,
          fmt::format("dataset {} is virtual: its data lies in other files; stage those", path));
    }
    LOOM_TRY(make_groups(src.get(), dst.get(), path, plan.notes));
    DatasetPlan p;
    p.path = path;
    // Small contiguous datasets travel inside the skeleton too: a round trip and an
    // allocation each would cost more than their bytes (10,000 datasets of 1 KiB).
    const bool small = layout == H5D_CONTIGUOUS && H5Dget_storage_size(d.get()) <= kCopyBelow;
    if (layout == H5D_COMPACT || has_vlen(type.get()) || small) {
      // Not raw bytes at a fixed place, or too few of them: copied through HDF5, attributes
      // apart (some may not carry).
      Hid ocpy(H5Pcreate(H5P_OBJECT_COPY), H5Pclose);
      H5Pset_copy_object(ocpy.get(), H5O_COPY_WITHOUT_ATTR_FLAG);
      if (H5Ocopy(src.get(), path.c_str(), dst.get(), path.c_str(), ocpy.get(), H5P_DEFAULT) < 0) {
        return hdf5_error(ErrorCode::kInternal, fmt::format("copying dataset {}", path));
      }
      Hid copied(H5Dopen2(dst.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
      LOOM_TRY(copy_attributes(d.get(), copied.get(), path, plan.notes));
      plan.copied_bytes += H5Dget_storage_size(d.get());
      p.kind = DatasetPlan::Kind::kCopied;
      plan.datasets.push_back(std::move(p));
      continue;
    }
    Hid space(H5Dget_space(d.get()), H5Sclose);
    Hid plain = transient(type.get());
    Hid made(H5Dcreate2(dst.get(), path.c_str(), plain.get(), space.get(), H5P_DEFAULT, dcpl.get(),
                        H5P_DEFAULT),
             H5Dclose);
    if (!made.valid())
      return hdf5_error(ErrorCode::kInternal, fmt::format("making dataset {}", path));
    LOOM_TRY(copy_attributes(d.get(), made.get(), path, plan.notes));
    if (layout == H5D_CONTIGUOUS) {
      p.kind = DatasetPlan::Kind::kContiguous;
      const haddr_t address = H5Dget_offset(d.get());
      if (address != HADDR_UNDEF) {  // never written: nothing stored, fill values on both sides
        p.address = address;
        p.size = H5Dget_storage_size(d.get());
        // What HDF5 reads is the dataspace's elements: a damaged file whose storage says
        // otherwise would arrive different from what it reads (or overrun the block).
        const auto points = H5Sget_simple_extent_npoints(space.get());
        const std::size_t element = H5Tget_size(plain.get());
        if (points < 0 || element == 0 || static_cast<std::uint64_t>(points) > p.size / element ||
            static_cast<std::uint64_t>(points) * element != p.size) {
          return hdf5_error(ErrorCode::kInvalidArgument,
                            fmt::format("dataset {} is damaged: its {} elements of {} bytes are "
                                        "stored in {} bytes",
                                        path, points, element, p.size));
        }
      }
    } else {
      p.kind = DatasetPlan::Kind::kChunked;
      const int rank = H5Sget_simple_extent_ndims(space.get());
      std::vector<hsize_t> dims(static_cast<std::size_t>(rank)),
          chunk(static_cast<std::size_t>(rank));
      H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
      H5Pget_chunk(dcpl.get(), rank, chunk.data());
      // The chunk grid, walked coordinate by coordinate (row-major).
      std::vector<hsize_t> at(static_cast<std::size_t>(rank), 0);
      const bool empty = std::ranges::any_of(dims, [](hsize_t d) { return d == 0; });
      while (!empty) {
        unsigned mask = 0;
        haddr_t address = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info_by_coord(d.get(), at.data(), &mask, &address, &size) < 0) {
          return hdf5_error(ErrorCode::kInternal,
                            fmt::format("reading the chunk index of {}", path));
        }
        if (address != HADDR_UNDEF)
          p.chunks.push_back({{at.begin(), at.end()}, mask, address, size});
        int i = rank - 1;
        for (; i >= 0; --i) {
          at[static_cast<std::size_t>(i)] += chunk[static_cast<std::size_t>(i)];
          if (at[static_cast<std::size_t>(i)] < dims[static_cast<std::size_t>(i)]) break;
          at[static_cast<std::size_t>(i)] = 0;
        }
        if (i < 0) break;
      }
    }
    plan.datasets.push_back(std::move(p));
  }
  if (H5Fflush(dst.get(), H5F_SCOPE_GLOBAL) < 0)
    return hdf5_error(ErrorCode::kInternal, "writing the skeleton");
  const ssize_t size = H5Fget_file_image(dst.get(), nullptr, 0);
  if (size < 0) return hdf5_error(ErrorCode::kInternal, "sizing the skeleton");
  std::vector<char> image(static_cast<std::size_t>(size));
  if (H5Fget_file_image(dst.get(), image.data(), image.size()) != size)
    return hdf5_error(ErrorCode::kInternal, "copying the skeleton");
  for (std::size_t done = 0; done < image.size();) {
    const ssize_t n =
        ::pwrite(skeleton_fd, image.data() + done, image.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return make_error(ErrorCode::kResourceExhausted,
                        fmt::format("writing the skeleton: {}", loom::errno_text(errno)));
    }
    done += static_cast<std::size_t>(n);
  }
  return plan;
}

}  // namespace loom::burstbuffer
