#include "loom/burstbuffer/staging_spec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace loom::burstbuffer {

namespace {

constexpr std::string_view kStageIn = "--stage-in";
constexpr std::string_view kStageOut = "--stage-out";

std::unexpected<Error> invalid(std::string_view option, std::string_view text,
                               std::string_view why) {
  return make_error(ErrorCode::kInvalidArgument, fmt::format("{} {}: {}", option, text, why));
}

bool valid_export(std::string_view name) {
  return !name.empty() && std::ranges::all_of(name, [](char c) {
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

std::string_view without_trailing_slashes(std::string_view dir) {
  while (dir.size() > 1 && dir.ends_with('/')) dir.remove_suffix(1);
  return dir;
}

// What is wrong with a staged file, if anything: the refusals' reason.
std::optional<std::string> fault(const v1::StageIn& in) {
  if (!valid_export(in.export_name())) return "the node name before ':' is missing or malformed";
  const std::string_view path = in.path();
  if (!path.starts_with('/') || path.size() < 2 || path.ends_with('/') ||
      !plain_components(path.substr(1)))
    return "the path must be a file's absolute path in the node's export, without '.' or '..'";
  for (const std::string& dataset : in.datasets()) {
    if (!dataset.starts_with('/') || dataset.size() < 2)
      return fmt::format("dataset '{}' must be an absolute HDF5 path like /group/dset", dataset);
  }
  return std::nullopt;
}

std::optional<std::string> fault(const v1::StageOut& out) {
  const std::string_view slice_path = out.slice_path();
  if (slice_path.empty() || slice_path.starts_with('/') || !plain_components(slice_path))
    return "the file must be a path relative to the slice, without '.' or '..'";
  if (!valid_export(out.export_name())) return "the node name is missing or malformed";
  const std::string_view dir = without_trailing_slashes(out.dir());
  if (!dir.starts_with('/') || (dir.size() > 1 && !plain_components(dir.substr(1)))) {
    return "the destination must be a directory's absolute path in the node's export, without "
           "'.' or '..'";
  }
  return std::nullopt;
}

}  // namespace

std::string text_of(const v1::StageIn& in) {
  std::string text = fmt::format("{}:{}", in.export_name(), in.path());
  for (int i = 0; i < in.datasets_size(); ++i) text += (i == 0 ? ":" : ",") + in.datasets(i);
  return text;
}

std::string text_of(const v1::StageOut& out) {
  return fmt::format("{}:{}:{}", out.slice_path(), out.export_name(), out.dir());
}

std::string slice_name(const v1::StageIn& in) { return in.path().substr(in.path().rfind('/') + 1); }

Result<v1::StageIn> parse_stage_in(std::string_view text) {
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return invalid(kStageIn, text, "expected NODE:/path[:/dataset,...]");
  v1::StageIn in;
  in.set_export_name(std::string(text.substr(0, colon)));
  const std::string_view rest = text.substr(colon + 1);
  const std::size_t second = rest.find(':');
  in.set_path(std::string(rest.substr(0, second)));
  if (second != std::string_view::npos) {
    const std::string_view list = rest.substr(second + 1);
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t end = std::min(list.find(',', start), list.size());
      in.add_datasets(std::string(list.substr(start, end - start)));
      start = end + 1;
    }
  }
  // Refusals quote what the user wrote, not what it was read as.
  if (auto why = fault(in)) return invalid(kStageIn, text, *why);
  return in;
}

Result<v1::StageOut> parse_stage_out(std::string_view text) {
  const std::size_t first = text.find(':');
  const std::size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos)
    return invalid(kStageOut, text, "expected SLICEPATH:NODE:/dir/");
  v1::StageOut out;
  out.set_slice_path(std::string(text.substr(0, first)));
  out.set_export_name(std::string(text.substr(first + 1, second - first - 1)));
  out.set_dir(std::string(without_trailing_slashes(text.substr(second + 1))));
  if (auto why = fault(out)) return invalid(kStageOut, text, *why);
  return out;
}

Status check_staging(const v1::JobSpec& spec) {
  for (const v1::StageIn& in : spec.stage_in_files()) {
    if (auto why = fault(in)) return invalid(kStageIn, text_of(in), *why);
  }
  for (const v1::StageOut& out : spec.stage_out_files()) {
    if (auto why = fault(out)) return invalid(kStageOut, text_of(out), *why);
  }
  return {};
}

// The one reader of the deprecated fields.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
Status lift_legacy_staging(v1::JobSpec& spec) {
  for (const std::string& text : spec.stage_in())
    *spec.add_stage_in_files() = LOOM_TRY(parse_stage_in(text));
  for (const std::string& text : spec.stage_out())
    *spec.add_stage_out_files() = LOOM_TRY(parse_stage_out(text));
  spec.clear_stage_in();
  spec.clear_stage_out();
  return {};
}
#pragma GCC diagnostic pop

}  // namespace loom::burstbuffer
