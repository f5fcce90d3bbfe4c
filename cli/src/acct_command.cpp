// loom acct: the record of jobs and what they used, as Slurm's sacct: what fair share
// charged (cores held x elapsed), what the kernel counted (CPU time, peak memory), the
// burst buffer held and the bytes staged. A user sees their own jobs, an admin anybody's.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <array>
#include <chrono>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "job_json.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/printable.hpp"

namespace loom::cli {

using namespace loom::client;

namespace {

struct Options {
  std::string controller, user, account, state, since, until;
  bool json = false;
};

// A time as sacct takes one, in local time: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], "now", or
// now-DURATION ("now-2h", "now-7d").
Result<std::int64_t> parse_time(const std::string& option, const std::string& text,
                                std::int64_t now) {
  if (text == "now") return now;
  if (text.starts_with("now-")) {
    auto ago = parse_duration(text.substr(4));
    if (!ago) return std::unexpected(ago.error().with_context(option));
    return now - ago->count();
  }
  std::tm fields{};
  const char* end = nullptr;
  for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"}) {
    fields = {};
    end = ::strptime(text.c_str(), format, &fields);
    if (end != nullptr && *end == '\0') break;
  }
  if (end == nullptr || *end != '\0')
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} {}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], now or "
                                  "now-DURATION",
                                  option, text));
  fields.tm_isdst = -1;
  return static_cast<std::int64_t>(::mktime(&fields));
}

std::int64_t midnight(std::int64_t now) {
  const std::time_t t = now;
  std::tm local{};
  ::localtime_r(&t, &local);
  local.tm_hour = local.tm_min = local.tm_sec = 0;
  local.tm_isdst = -1;
  return static_cast<std::int64_t>(::mktime(&local));
}

// What a job used, from its record.
struct Used {
  std::int64_t elapsed = 0;  // seconds it held its allocation: to its end, or to now
  std::uint64_t cores = 0;
  std::uint64_t nvme = 0;  // bytes of slices
  std::uint64_t staged_in = 0, staged_out = 0;
  double in_rate = 0, out_rate = 0;  // the fastest file's bytes per second
};

Used used(const v1::JobInfo& j, std::int64_t now) {
  Used u;
  if (j.has_start_time())
    u.elapsed = std::max<std::int64_t>(0, (j.has_end_time() ? j.end_time() : now) - j.start_time());
  for (const v1::PlacedNode& node : j.placement().nodes()) {
    for (const v1::PlacedRank& rank : node.ranks()) u.cores += rank.cores_size();
    u.nvme += node.bb_bytes();
  }
  for (const v1::StagingFile& f : j.staging()) {
    const bool in = f.direction() == "in";
    (in ? u.staged_in : u.staged_out) += f.bytes_done();
    double& rate = in ? u.in_rate : u.out_rate;
    rate = std::max(rate, f.rate_bps());
  }
  return u;
}

nlohmann::json as_json(const v1::JobInfo& j, std::int64_t now) {
  const Used u = used(j, now);
  const auto elapsed = static_cast<std::uint64_t>(u.elapsed);
  nlohmann::json out = job_identity(j);
  out.update({{"submit_time", j.submit_time()},
              {"start_time", or_null(j.has_start_time(), j.start_time())},
              {"end_time", or_null(j.has_end_time(), j.end_time())},
              {"elapsed_s", u.elapsed},
              {"nodes", j.placement().nodes_size()},
              {"cores", u.cores},
              {"core_seconds", u.cores * elapsed},
              {"cpu_seconds", or_null(j.has_usage(), j.usage().cpu_seconds())},
              {"memory_peak_bytes",
               or_null(j.usage().has_memory_peak_bytes(), j.usage().memory_peak_bytes())},
              {"nvme_bytes", u.nvme},
              {"nvme_byte_seconds", u.nvme * elapsed},
              {"staged_in_bytes", u.staged_in},
              {"staged_out_bytes", u.staged_out},
              {"stage_in_rate_bps", u.in_rate},
              {"stage_out_rate_bps", u.out_rate}});
  return out;
}

void print_table(const std::vector<v1::JobInfo>& jobs, std::int64_t now) {
  constexpr std::string_view kRow =
      "{:>10} {:<12} {:<12} {:<11} {:>12} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {}\n";
  std::cout << fmt::format(kRow, "ID", "USER", "ACCOUNT", "STATE", "ELAPSED", "CORES", "CORE_S",
                           "CPU_S", "MAX_MEM", "NVME", "STAGED_IN", "STAGED_OUT", "REASON");
  for (const v1::JobInfo& j : jobs) {
    const Used u = used(j, now);
    std::cout << fmt::format(
        kRow,
        j.array_job() != 0 ? fmt::format("{}_{}", j.array_job(), j.array_index())
                           : std::to_string(j.id()),
        j.user(), printable(j.account()).substr(0, 12), v1::JobState_Name(j.state()),
        format_duration(std::chrono::seconds(u.elapsed)), u.cores,
        u.cores * static_cast<std::uint64_t>(u.elapsed),
        j.has_usage() ? fmt::format("{:.1f}", j.usage().cpu_seconds()) : "-",
        j.usage().has_memory_peak_bytes() ? format_bytes(Bytes(j.usage().memory_peak_bytes()))
                                          : "-",
        format_bytes(Bytes(u.nvme)), format_bytes(Bytes(u.staged_in)),
        format_bytes(Bytes(u.staged_out)), printable(j.reason()));
  }
}

Status run(const Options& o, const Context& context) {
  const std::int64_t now =
      std::chrono::system_clock::now().time_since_epoch() / std::chrono::seconds(1);
  v1::AcctRequest request;
  request.set_since(o.since.empty() ? midnight(now)
                                    : LOOM_TRY(parse_time("--since", o.since, now)));
  request.set_until(o.until.empty() ? now : LOOM_TRY(parse_time("--until", o.until, now)));
  request.set_user(o.user);
  request.set_account(o.account);
  if (!o.state.empty()) {
    v1::JobState state{};
    if (!v1::JobState_Parse(o.state, &state))
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--state {}: not a job state (PENDING, RUNNING, COMPLETED, "
                                    "FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...)",
                                    o.state));
    request.set_state(state);
  }
  const Client client = LOOM_TRY(connect(o.controller, context.config));
  std::vector<v1::JobInfo> jobs;
  for (std::uint64_t after = 0;;) {
    *request.mutable_caller() = LOOM_TRY(me());  // a credential decodes once
    request.set_after(after);
    v1::ListReply page;
    grpc::ClientContext call;
    if (grpc::Status s = client.stub->Acct(&call, request, &page); !s.ok())
      return std::unexpected(client.error(s));
    for (v1::JobInfo& j : *page.mutable_jobs()) jobs.push_back(std::move(j));
    if (page.next_after() == 0) break;
    after = page.next_after();
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const v1::JobInfo& j : jobs) out.push_back(as_json(j, now));
    std::cout << nlohmann::json{{"since", request.since()},
                                {"until", request.until()},
                                {"jobs", out}}
                     .dump(2)
              << '\n';
  } else {
    print_table(jobs, now);
  }
  return {};
}

}  // namespace

Command add_acct(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto* acct = app.add_subcommand(
      "acct",
      "The record of jobs that waited or ran between --since and --until, with what they used: "
      "cores x elapsed (what fair share charges), CPU time, peak memory, NVMe, bytes staged "
      "(your jobs; an admin's: everybody's)");
  acct->add_option("--user", o->user, "One user's jobs (admins only, for another's)");
  acct->add_option("--account", o->account, "One account's jobs");
  acct->add_option("--state", o->state, "Jobs in this state: COMPLETED, FAILED, RUNNING, ...");
  acct->add_option("--since", o->since,
                   "From: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (local time), now or now-DURATION "
                   "(default: today's midnight)");
  acct->add_option("--until", o->until, "To, written as --since (default: now)");
  acct->add_flag("--json", o->json, "Print one JSON object");
  acct->add_option("--controller", o->controller, kControllerHelp);
  return {acct, [o](const Context& context) { return run(*o, context); }};
}

}  // namespace loom::cli
