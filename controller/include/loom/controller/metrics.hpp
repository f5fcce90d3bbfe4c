// Prometheus' text exposition format (version 0.0.4), which OpenMetrics scrapers read too:
// what loomctld serves on /metrics. Names and labels follow Prometheus' conventions (base
// units, `_total` for counters); label values are the controller's own words (states,
// accounts, nodes), never what users type.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::controller {

using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

// Observations counted into fixed buckets, as a Prometheus histogram.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size()) {}
  void observe(double value);

 private:
  friend class Exposition;
  std::vector<double> bounds_;         // upper bounds, ascending; +Inf is implied
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

class Exposition {
 public:
  // A metric family's HELP and TYPE ("gauge", "counter", "histogram"): once, before its
  // samples.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, Labels labels, double value);
  void histogram(std::string_view name, const Histogram& histogram);
  const std::string& text() const { return text_; }

 private:
  void line(std::string_view name, Labels labels, std::string_view extra_label,
            std::string_view extra_value, double value);
  std::string text_;
};

}  // namespace loom::controller
