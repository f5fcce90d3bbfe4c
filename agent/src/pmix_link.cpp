#include "pmix_link.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <chrono>

#include "loom/common/printable.hpp"
#include "loom/launch/pmix_channel.hpp"

namespace loom::agent {

namespace {

// Long enough for PMIx's start on a loaded node, short enough that a server that hangs
// fails the launch rather than holding the node.
constexpr std::chrono::seconds kReadyTimeout(30);
constexpr std::size_t kMaxAbortMessage = 1024;

// The PMIx environment of each of the node's ranks, checked: every rank once, and only
// PMIX_ names, so that the server (the job's user's) cannot reach past PMIx's own.
Result<PmixLink::Environments> environments_of(const v1::PmixReady& ready, const v1::PmixJob& job) {
  PmixLink::Environments out;
  for (const v1::PmixRankEnvironment& r : ready.ranks()) {
    auto& environment = out[r.rank()];
    for (const auto& [name, value] : r.environment()) {
      if (!name.starts_with("PMIX_")) {
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("the PMIx server set {} for rank {}, which is not PMIx's",
                                      printable(name), r.rank()));
      }
      environment[name] = value;
    }
  }
  for (const v1::PmixRank& r : job.local()) {
    if (!out.contains(r.rank()))
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("the PMIx server gave rank {} no environment", r.rank()));
  }
  if (out.size() != static_cast<std::size_t>(job.local_size()))
    return make_error(ErrorCode::kInvalidArgument, "the PMIx server named ranks not on this node");
  return out;
}

}  // namespace

Result<std::unique_ptr<PmixLink>> PmixLink::start(const CgroupTree& cgroups, TaskSpec server,
                                                  const v1::PmixJob& job, std::string node) {
  std::array<int, 2> pair{-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair.data()) != 0)
    return make_error(ErrorCode::kResourceExhausted, "socketpair for the PMIx server failed");
  UniqueFd mine(pair[0]);
  const UniqueFd theirs(pair[1]);  // the keeper's copy is the server's; this one closes here
  server.channel = theirs.get();
  Task task = LOOM_TRY(Task::start(cgroups, server));
  std::unique_ptr<PmixLink> link(new PmixLink(std::move(task), std::move(mine), std::move(node)));
  const auto context = [](Error e) { return std::move(e).with_context("the job's PMIx server"); };
  if (auto sent = launch::write_message(link->channel_.get(), job); !sent)
    return std::unexpected(context(std::move(sent).error()));
  v1::FromPmix answer;
  if (auto read = launch::read_message(link->channel_.get(), answer, kReadyTimeout); !read)
    return std::unexpected(context(std::move(read).error()));
  if (answer.has_failed())
    return make_error(ErrorCode::kFailedPrecondition,
                      "the job's PMIx server: " + valid_utf8(answer.failed().error()));
  if (!answer.has_ready())
    return make_error(ErrorCode::kInvalidArgument,
                      "the job's PMIx server answered the namespace with something else");
  link->environments_ = LOOM_TRY(environments_of(answer.ready(), job));
  return link;
}

std::unique_ptr<PmixLink> PmixLink::adopt(Task server, std::string node) {
  return std::unique_ptr<PmixLink>(new PmixLink(std::move(server), UniqueFd(), std::move(node)));
}

PmixLink::~PmixLink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  if (channel_) ::shutdown(channel_.get(), SHUT_RDWR);  // the reader sees its end
  if (reader_.joinable()) reader_.join();
  (void)server_.kill();  // ~Task waits for it
}

void PmixLink::listen(std::function<void()> failed) {
  if (!channel_) return;
  reader_ = std::thread([this, failed = std::move(failed)] {
    v1::FromPmix event;
    Status read;
    while ((read = launch::read_message(channel_.get(), event))) heard(event, failed);
    std::unique_lock lock(mutex_);
    // Its ranks cannot finish without it: nothing but this link ends it.
    const bool first = !stopping_ && fail({1, std::nullopt, v1::REASON_MPI_FAILED,
                                           fmt::format("the PMIx server on {} stopped serving: {}",
                                                       node_, read.error().message())});
    lock.unlock();
    if (first) failed();
  });
}

void PmixLink::heard(const v1::FromPmix& event, const std::function<void()>& failed) {
  std::unique_lock lock(mutex_);
  bool first = false;
  switch (event.event_case()) {
    case v1::FromPmix::kConnected:
      connected_.insert(event.connected().rank());
      break;
    case v1::FromPmix::kFinalized:
      finalized_.insert(event.finalized().rank());
      break;
    case v1::FromPmix::kAbort: {
      const v1::PmixAbort& a = event.abort();
      const std::string message = valid_utf8(a.message().substr(0, kMaxAbortMessage));
      first = fail({a.status() != 0 ? a.status() : 1, std::nullopt, v1::REASON_MPI_FAILED,
                    fmt::format("rank {} on {} called PMIx_Abort({}){}{}", a.rank(), node_,
                                a.status(), message.empty() ? "" : ": ", message)});
      break;
    }
    case v1::FromPmix::kFailed:
      first = fail({1, std::nullopt, v1::REASON_MPI_FAILED,
                    fmt::format("the PMIx server on {}: {}", node_,
                                valid_utf8(event.failed().error().substr(0, kMaxAbortMessage)))});
      break;
    default:
      break;  // a newer server's report, or none
  }
  lock.unlock();
  if (first) failed();
}

bool PmixLink::rank_ended(std::uint32_t rank, const ExitStatus& status) {
  std::lock_guard lock(mutex_);
  if (status.exit_code != 0) return fail({status.exit_code, status.signal, v1::REASON_NONE, ""});
  // A program that never called PMIx_Init is a plain task, whose end is no failure.
  if (connected_.contains(rank) && !finalized_.contains(rank)) {
    return fail({1, std::nullopt, v1::REASON_MPI_FAILED,
                 fmt::format("rank {} on {} exited before PMIx_Finalize", rank, node_)});
  }
  return false;
}

bool PmixLink::fail(RankFailure failure) {
  if (failure_) return false;
  failure_ = std::move(failure);
  return true;
}

std::optional<RankFailure> PmixLink::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

}  // namespace loom::agent
