#include "loom/sched/swf.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>

namespace loom::sched {

namespace {

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// "; MaxProcs: 256" gives 256 for key "MaxProcs".
std::optional<std::int64_t> header_value(std::string_view line, std::string_view key) {
  std::size_t at = line.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = line.substr(at + key.size());
  if (rest.empty() || rest.front() != ':') return std::nullopt;
  rest.remove_prefix(1);
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t' || rest.back() == '\r'))
    rest.remove_suffix(1);
  return parse_int(rest);
}

}  // namespace

Result<SwfTrace> parse_swf(std::string_view text, std::string_view source) {
  SwfTrace trace;
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) continue;
    line.remove_prefix(first);
    if (line.front() == ';') {
      // A header that lacks one keeps what an earlier header line said.
      if (auto v = header_value(line, "MaxProcs")) trace.max_procs = v;
      if (auto v = header_value(line, "MaxNodes")) trace.max_nodes = v;
      continue;
    }
    std::array<std::int64_t, 18> fields{};
    std::size_t count = 0;
    while (!line.empty()) {
      const std::size_t end = std::min(line.find_first_of(" \t\r"), line.size());
      const std::string_view token = line.substr(0, end);
      if (count == fields.size()) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}:{}: more than 18 fields", source, number));
      }
      auto value = parse_int(token);
      if (!value) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}:{}: field {} is \"{}\", not an integer", source, number,
                                      count + 1, token));
      }
      fields[count++] = *value;
      line.remove_prefix(end);
      const std::size_t next = line.find_first_not_of(" \t\r");
      line.remove_prefix(next == std::string_view::npos ? line.size() : next);
    }
    if (count != fields.size()) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}:{}: {} fields, expected 18", source, number, count));
    }
    if (fields[0] < 0 || fields[1] < 0) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("{}:{}: a job needs a job number and a submit time", source, number));
    }
    trace.jobs.push_back({static_cast<std::uint64_t>(fields[0]), fields[1], fields[3], fields[4],
                          fields[7], fields[8], number});
  }
  return trace;
}

}  // namespace loom::sched
