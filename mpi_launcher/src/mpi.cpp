#include "loom/launch/mpi.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <utility>

namespace loom::launch {

std::string hosts(const std::vector<NodeRanks>& nodes) {
  std::vector<std::string> out;
  out.reserve(nodes.size());
  for (const NodeRanks& n : nodes) out.push_back(fmt::format("{}:{}", n.node, n.ranks));
  return fmt::format("{}", fmt::join(out, ","));
}

std::string nodelist(const std::vector<NodeRanks>& nodes) {
  std::vector<std::string> names;
  names.reserve(nodes.size());
  for (const NodeRanks& n : nodes) names.push_back(n.node);
  return fmt::format("{}", fmt::join(names, ","));
}

std::vector<std::string> mpirun_argv(const MpiPlan& plan) {
  unsigned ranks = 0;
  for (const NodeRanks& n : plan.nodes) ranks += n.ranks;
  std::vector<std::string> argv{
      "mpirun",   "-np",  std::to_string(ranks), "--host", hosts(plan.nodes),
      "--map-by", "slot", "--bind-to",           "none"};
  if (!plan.rsh_agent.empty()) {  // daemons on other nodes start through it, never ssh
    argv.insert(argv.end(),
                {"--mca", "plm_rsh_agent", plan.rsh_agent, "--mca", "plm_rsh_no_tree_spawn", "1"});
  }
  if (!plan.network.empty()) {
    argv.insert(argv.end(), {"--mca", "oob_tcp_if_include", plan.network, "--mca",
                             "btl_tcp_if_include", plan.network});
  }
  argv.push_back(plan.rank_wrapper);
  argv.insert(argv.end(), plan.argv.begin(), plan.argv.end());
  return argv;
}

Result<std::vector<std::string>> split_command(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::exchange(word, {}));
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const std::size_t close = line.find('\'', i + 1);
      if (close == std::string_view::npos) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("command \"{}\": a ' at {} is not closed", line, i));
      }
      word.append(line.substr(i + 1, close - i - 1));
      i = close;
    } else if (c == '"') {
      std::size_t j = i + 1;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size() &&
            std::string_view("$`\"\\\n").find(line[j + 1]) != std::string_view::npos)
          ++j;
        word.push_back(line[j]);
      }
      if (j == line.size()) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format(R"(command "{}": a " at {} is not closed)", line, i));
      }
      i = j;
    } else if (c == '\\' && i + 1 < line.size()) {
      word.push_back(line[++i]);
    } else {
      word.push_back(c);
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

Result<std::vector<std::string>> daemon_arguments(const std::vector<std::string>& words) {
  if (words.empty() || words.front() != "orted") {
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("loom-rsh runs only Open MPI's daemon, orted, not \"{}\"",
                                  fmt::join(words, " ")));
  }
  std::vector<std::string> arguments;
  for (std::size_t i = 1; i < words.size(); ++i) {
    if (words[i] != "--daemonize") arguments.push_back(words[i]);
  }
  return arguments;
}

std::string encode_bindings(const std::vector<RankBinding>& ranks) {
  std::vector<std::string> parts;
  parts.reserve(ranks.size());
  for (const RankBinding& r : ranks) {
    parts.push_back(fmt::format("{}={}@{}", r.rank, fmt::join(r.pus, ","),
                                r.numa ? std::to_string(*r.numa) : ""));
  }
  return fmt::format("{}", fmt::join(parts, ";"));
}

namespace {

Result<unsigned> number(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format(R"(LOOM_RANK_BINDING "{}": "{}" is not a number)", whole, text));
  }
  return value;
}

}  // namespace

Result<std::vector<RankBinding>> decode_bindings(std::string_view text) {
  std::vector<RankBinding> out;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find(';', start), text.size());
    const std::string_view part = text.substr(start, end - start);
    const std::size_t eq = part.find('='), at = part.find('@');
    if (eq == std::string_view::npos || at == std::string_view::npos || at < eq) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("LOOM_RANK_BINDING \"{}\": expected RANK=PUS@NUMA", text));
    }
    RankBinding r;
    r.rank = LOOM_TRY(number(part.substr(0, eq), text));
    const std::string_view pus = part.substr(eq + 1, at - eq - 1);
    for (std::size_t p = 0; !pus.empty();) {
      const std::size_t comma = std::min(pus.find(',', p), pus.size());
      r.pus.push_back(LOOM_TRY(number(pus.substr(p, comma - p), text)));
      if (comma == pus.size()) break;
      p = comma + 1;
    }
    if (at + 1 < part.size()) r.numa = LOOM_TRY(number(part.substr(at + 1), text));
    out.push_back(std::move(r));
    start = end + 1;
  }
  return out;
}

}  // namespace loom::launch
