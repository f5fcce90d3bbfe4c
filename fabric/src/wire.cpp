#include "loom/fabric/wire.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>

namespace loom::fabric {

namespace {

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string encode_name(std::span<const std::byte> name) {
  std::string out;
  out.reserve(name.size() * 2);
  for (std::byte b : name) out += fmt::format("{:02x}", static_cast<unsigned>(b));
  return out;
}

Result<std::vector<std::byte>> decode_name(std::string_view text) {
  if (text.empty() || text.size() % 2 != 0) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("endpoint name \"{}\": expected an even number of hex digits", text));
  }
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("endpoint name \"{}\": '{}' at {} is not a hex digit", text,
                                    hi < 0 ? text[i] : text[i + 1], hi < 0 ? i : i + 1));
    }
    out.push_back(static_cast<std::byte>(hi * 16 + lo));
  }
  return out;
}

std::string encode_region(const RemoteRegion& r) {
  return fmt::format("{:x}:{:x}:{:x}", r.address, r.key, r.length);
}

Result<RemoteRegion> decode_region(std::string_view text) {
  RemoteRegion r;
  const std::array<std::uint64_t*, 3> fields{&r.address, &r.key, &r.length};
  const std::array<const char*, 3> names{"address", "key", "length"};
  std::string_view rest = text;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::size_t colon = i + 1 < fields.size() ? rest.find(':') : rest.size();
    if (colon == std::string_view::npos) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("region \"{}\": expected address:key:length in hex", text));
    }
    const std::string_view field = rest.substr(0, colon);
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), *fields[i], 16);
    if (field.empty() || ec != std::errc() || end != field.data() + field.size()) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format(R"(region "{}": {} "{}" is not a hex number)", text, names[i], field));
    }
    rest.remove_prefix(std::min(rest.size(), colon + 1));
  }
  return r;
}

}  // namespace loom::fabric
