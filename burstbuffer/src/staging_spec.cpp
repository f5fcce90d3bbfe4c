#include "loom/burstbuffer/staging_spec.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace loom::burstbuffer {

namespace {

std::unexpected<Error> invalid(std::string_view option, std::string_view text,
                               std::string_view why) {
  return make_error(ErrorCode::kInvalidArgument, fmt::format("{} {}: {}", option, text, why));
}

bool valid_node(std::string_view node) {
  return !node.empty() && std::all_of(node.begin(), node.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
}

// Every component a plain name: no "", ".", "..".
bool plain_components(std::string_view path) {
  for (std::size_t start = 0; start <= path.size();) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

std::string StageIn::name() const { return path.substr(path.rfind('/') + 1); }

Result<StageIn> parse_stage_in(std::string_view text) {
  constexpr std::string_view kOption = "--stage-in";
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return invalid(kOption, text, "expected NODE:/path[:/dataset,...]");
  StageIn in;
  in.node = std::string(text.substr(0, colon));
  if (!valid_node(in.node))
    return invalid(kOption, text, "the node name before ':' is missing or malformed");
  std::string_view rest = text.substr(colon + 1);
  const std::size_t second = rest.find(':');
  const std::string_view path = rest.substr(0, second);
  if (!path.starts_with('/') || path.size() < 2 || path.ends_with('/') ||
      !plain_components(path.substr(1))) {
    return invalid(
        kOption, text,
        "the path must be a file's absolute path in the node's export, without '.' or '..'");
  }
  in.path = std::string(path);
  if (second != std::string_view::npos) {
    std::string_view list = rest.substr(second + 1);
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t end = std::min(list.find(',', start), list.size());
      const std::string_view dataset = list.substr(start, end - start);
      if (!dataset.starts_with('/') || dataset.size() < 2) {
        return invalid(
            kOption, text,
            fmt::format("dataset '{}' must be an absolute HDF5 path like /group/dset", dataset));
      }
      in.datasets.emplace_back(dataset);
      start = end + 1;
    }
  }
  return in;
}

Result<StageOut> parse_stage_out(std::string_view text) {
  constexpr std::string_view kOption = "--stage-out";
  const std::size_t first = text.find(':');
  const std::size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos)
    return invalid(kOption, text, "expected SLICEPATH:NODE:/dir/");
  StageOut out;
  out.slice_path = std::string(text.substr(0, first));
  out.node = std::string(text.substr(first + 1, second - first - 1));
  out.dir = std::string(text.substr(second + 1));
  if (out.slice_path.empty() || out.slice_path.starts_with('/') ||
      !plain_components(out.slice_path)) {
    return invalid(kOption, text,
                   "the file must be a path relative to the slice, without '.' or '..'");
  }
  if (!valid_node(out.node)) return invalid(kOption, text, "the node name is missing or malformed");
  std::string_view dir = out.dir;
  while (dir.size() > 1 && dir.ends_with('/')) dir.remove_suffix(1);
  if (!dir.starts_with('/') || (dir.size() > 1 && !plain_components(dir.substr(1)))) {
    return invalid(kOption, text,
                   "the destination must be a directory's absolute path in the node's export, "
                   "without '.' or '..'");
  }
  out.dir = std::string(dir);
  return out;
}

Status check_staging(std::span<const std::string> stage_in,
                     std::span<const std::string> stage_out) {
  for (const std::string& text : stage_in) LOOM_TRY(parse_stage_in(text));
  for (const std::string& text : stage_out) LOOM_TRY(parse_stage_out(text));
  return {};
}

}  // namespace loom::burstbuffer
