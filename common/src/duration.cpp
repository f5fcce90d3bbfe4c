#include "loom/common/duration.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <limits>
#include <optional>

#include "decimal.hpp"

namespace loom {

namespace {

constexpr std::uint64_t kMinute = 60;
constexpr std::uint64_t kHour = 60 * kMinute;
constexpr std::uint64_t kDay = 24 * kHour;
// Keeps every sum below in range and far beyond any walltime (about 292 billion years
// fit in chrono::seconds; this is 100 years).
constexpr std::uint64_t kMaxSeconds = std::uint64_t{100} * 365 * kDay;

// A field of Slurm's colon form: plain digits.
std::optional<std::uint64_t> parse_field(std::string_view field) {
  std::uint64_t value = 0;
  if (field.empty() || field.size() > 12) return std::nullopt;
  auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (ec != std::errc() || end != field.data() + field.size()) return std::nullopt;
  return value;
}

}  // namespace

Result<std::chrono::seconds> parse_duration(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("invalid duration \"{}\": {}", text, why));
  };
  auto done = [&](std::uint64_t seconds) -> Result<std::chrono::seconds> {
    if (seconds > kMaxSeconds) return fail("longer than 100 years");
    return std::chrono::seconds(static_cast<std::int64_t>(seconds));
  };
  if (text.empty()) return fail("empty");
  if (text.front() == '-') return fail("a duration cannot be negative");

  // A number with a unit: 90s, 90m, 1.5h, 2d.
  const char last = text.back();
  if (last == 's' || last == 'm' || last == 'h' || last == 'd') {
    std::string_view rest = text.substr(0, text.size() - 1);
    auto number = detail::take_decimal(rest);
    if (!number || !rest.empty()) return fail("expected a number before the unit, as in 90m");
    const std::uint64_t unit = last == 's' ? 1 : last == 'm' ? kMinute : last == 'h' ? kHour : kDay;
    auto seconds = detail::scale_decimal(*number, unit);
    if (!seconds) return fail("longer than 100 years");
    return done(*seconds);
  }

  // Slurm's forms: [D-]H:M:S, D-H[:M], M[:S].
  std::uint64_t days = 0;
  std::string_view clock = text;
  bool has_days = false;
  if (auto dash = text.find('-'); dash != std::string_view::npos) {
    auto d = parse_field(text.substr(0, dash));
    if (!d) return fail("expected whole days before '-', as in 2-00:00:00");
    days = *d;
    has_days = true;
    clock = text.substr(dash + 1);
  }
  std::array<std::uint64_t, 3> fields{};
  std::size_t count = 0;
  for (std::size_t start = 0;;) {
    std::size_t colon = clock.find(':', start);
    std::string_view field = clock.substr(start, colon - start);
    if (count == fields.size()) return fail("too many ':' fields (at most H:M:S)");
    auto value = parse_field(field);
    if (!value) {
      return fail(
          "expected M, M:S, H:M:S, D-H, D-H:M or D-H:M:S with whole numbers, "
          "or a number with a unit s, m, h or d");
    }
    fields[count++] = *value;
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  std::uint64_t hours = 0, minutes = 0, seconds = 0;
  if (has_days) {  // D-H, D-H:M, D-H:M:S
    hours = fields[0];
    minutes = count > 1 ? fields[1] : 0;
    seconds = count > 2 ? fields[2] : 0;
    if (hours >= 24) return fail("hours after a day count must be below 24");
  } else if (count == 3) {  // H:M:S
    hours = fields[0];
    minutes = fields[1];
    seconds = fields[2];
  } else {  // M or M:S
    minutes = fields[0];
    seconds = count > 1 ? fields[1] : 0;
  }
  if ((count == 3 || has_days) && minutes >= 60) return fail("minutes must be below 60");
  if (count > 1 && seconds >= 60) return fail("seconds must be below 60");
  if (days > kMaxSeconds / kDay || hours > kMaxSeconds / kHour || minutes > kMaxSeconds / kMinute ||
      seconds > kMaxSeconds) {
    return fail("longer than 100 years");
  }
  return done(days * kDay + hours * kHour + minutes * kMinute + seconds);
}

std::string format_duration(std::chrono::seconds duration) {
  auto total = static_cast<std::uint64_t>(std::max<std::int64_t>(0, duration.count()));
  const std::uint64_t days = total / kDay;
  const std::uint64_t hours = total % kDay / kHour;
  const std::uint64_t minutes = total % kHour / kMinute;
  const std::uint64_t seconds = total % kMinute;
  if (days > 0) return fmt::format("{}-{:02}:{:02}:{:02}", days, hours, minutes, seconds);
  if (hours > 0) return fmt::format("{}:{:02}:{:02}", hours, minutes, seconds);
  return fmt::format("{}:{:02}", minutes, seconds);
}

}  // namespace loom
