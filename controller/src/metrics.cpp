#include "loom/controller/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace loom::controller {

namespace {

// A label value as the format escapes it: backslash, double quote and newline.
std::string escaped(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  return fmt::format("{}", value);
}

}  // namespace

void Histogram::observe(double value) {
  const auto bucket = std::ranges::lower_bound(bounds_, value) - bounds_.begin();
  if (static_cast<std::size_t>(bucket) < counts_.size())
    ++counts_[static_cast<std::size_t>(bucket)];
  ++count_;
  sum_ += value;
}

void Exposition::family(std::string_view name, std::string_view type, std::string_view help) {
  text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void Exposition::line(std::string_view name, Labels labels, std::string_view extra_label,
                      std::string_view extra_value, double value) {
  std::string pairs;
  for (const auto& [label, value_of] : labels)
    pairs += fmt::format("{}{}=\"{}\"", pairs.empty() ? "" : ",", label, escaped(value_of));
  if (!extra_label.empty())
    pairs += fmt::format("{}{}=\"{}\"", pairs.empty() ? "" : ",", extra_label, extra_value);
  text_ += pairs.empty() ? fmt::format("{} {}\n", name, number(value))
                         : fmt::format("{}{{{}}} {}\n", name, pairs, number(value));
}

void Exposition::sample(std::string_view name, Labels labels, double value) {
  line(name, labels, "", "", value);
}

void Exposition::histogram(std::string_view name, const Histogram& h) {
  std::uint64_t cumulative = 0;
  const std::string bucket = fmt::format("{}_bucket", name);
  for (std::size_t i = 0; i < h.bounds_.size(); ++i) {
    cumulative += h.counts_[i];
    line(bucket, {}, "le", number(h.bounds_[i]), static_cast<double>(cumulative));
  }
  line(bucket, {}, "le", "+Inf", static_cast<double>(h.count_));
  line(fmt::format("{}_sum", name), {}, "", "", h.sum_);
  line(fmt::format("{}_count", name), {}, "", "", static_cast<double>(h.count_));
}

}  // namespace loom::controller
