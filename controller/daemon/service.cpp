#include "service.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent_stream.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/munge.hpp"
#include "loom/common/printable.hpp"
#include "loom/launch/mpi.hpp"
#include "loom/proto/status.hpp"

namespace loom::controller {

namespace {

std::optional<std::uint32_t> index_of(const v1::JobRequest& request) {
  return request.has_array_index() ? std::optional(request.array_index()) : std::nullopt;
}

v1::JobInfo info(const JobRow& row) {
  v1::JobInfo j;
  j.set_id(row.id.value());
  j.set_name(row.spec.name());
  j.set_user(row.user);
  j.set_account(row.spec.account());
  j.set_state(row.state);
  j.set_reason(row.reason.text());
  j.set_reason_code(row.reason.code);
  if (row.exit_code) j.set_exit_code(*row.exit_code);
  if (row.signal) j.set_signal(*row.signal);
  j.set_submit_time(row.submit_time);
  if (row.start_time) j.set_start_time(*row.start_time);
  if (row.end_time) j.set_end_time(*row.end_time);
  j.set_tasks(row.spec.tasks());
  // Placed jobs count the nodes they hold; pending ones what they asked for.
  const int placed = row.placement.nodes_size();
  j.set_nodes(placed == 0 ? row.spec.nodes_min() : static_cast<std::uint32_t>(placed));
  *j.mutable_placement() = row.placement;
  if (row.array_job) {
    j.set_array_job(row.array_job->value());
    j.set_array_index(row.array_index);
  }
  *j.mutable_staging() = row.staging.files();
  if (row.usage) *j.mutable_usage() = *row.usage;
  return j;
}

// Listings go a page at a time: every job at once outgrew gRPC's 4 MiB once an array of
// 100,000 was listed.
constexpr std::size_t kMostPerPage = 1000;

const grpc::Status kStopping{grpc::StatusCode::UNAVAILABLE, "the controller is stopping"};

// A Watch call: the job as it is, then each time it changed, until it ends. Changes that
// come faster than the watcher reads are coalesced: it is sent the latest. The core's
// thread looks (a waiter) and hands what it saw over once stored; gRPC's reports each
// write done; both under State's mutex.
class WatchReactor final : public grpc::ServerWriteReactor<v1::JobInfo> {
 public:
  WatchReactor(Inbox& inbox, Caller who, const v1::JobRequest& request)
      : state_(std::make_shared<State>()) {
    state_->reactor = this;
    inbox.wait([&inbox, state = state_, who = std::move(who), id = JobId(request.job()),
                index = index_of(request)](Core& core, bool stopping) {
      {
        std::lock_guard lock(state->mutex);
        if (state->finished) return true;  // the watcher went away
      }
      std::optional<grpc::Status> end;
      std::optional<v1::JobInfo> now;
      if (stopping) {
        end = kStopping;
      } else if (auto row = core.jobs().show(who, id, index); !row) {
        end = to_grpc(row.error());
      } else {
        now = info(*row);
      }
      const bool ended = now && now->state() >= v1::COMPLETED;
      const bool last = end.has_value() || ended;  // before `end` moves into the callback
      // Sent once stored: a watcher never sees a state that the store could still lose.
      inbox.after_commit([state, now = std::move(now), end = std::move(end), ended]() mutable {
        std::lock_guard lock(state->mutex);
        if (state->finished) return;
        if (end) {
          state->finish(std::move(*end));
          return;
        }
        if (std::string serialized = now->SerializeAsString(); serialized != state->last) {
          state->last = std::move(serialized);
          state->next = std::move(*now);
          state->write_next();
        }
        if (!ended) return;
        state->ended = true;
        if (!state->writing) state->finish(grpc::Status::OK);
      });
      return last;
    });
  }
  // A call refused before it watches anything.
  static WatchReactor* refused(grpc::Status status) { return new WatchReactor(std::move(status)); }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(state_->mutex);
    state_->writing = false;
    if (state_->finished) return;
    if (!ok) {
      state_->finish({grpc::StatusCode::CANCELLED, "the watcher went away"});
    } else if (state_->next) {
      state_->write_next();
    } else if (state_->ended) {
      state_->finish(grpc::Status::OK);
    }
  }
  void OnCancel() override {
    std::lock_guard lock(state_->mutex);
    if (!state_->finished) state_->finish({grpc::StatusCode::CANCELLED, "the watcher went away"});
  }
  void OnDone() override { delete this; }

 private:
  struct State {
    std::mutex mutex;
    WatchReactor* reactor = nullptr;  // not to be touched once finished
    bool finished = false;
    bool writing = false;
    bool ended = false;  // the job ended: its last state is written, then the call ends
    std::string last;    // the last state looked at, serialized
    v1::JobInfo in_flight;
    std::optional<v1::JobInfo> next;

    void write_next() {
      if (writing || !next) return;
      in_flight = std::move(*next);
      next.reset();
      writing = true;
      reactor->StartWrite(&in_flight);
    }
    void finish(grpc::Status status) {
      finished = true;
      reactor->Finish(std::move(status));
    }
  };
  explicit WatchReactor(grpc::Status status) : state_(std::make_shared<State>()) {
    Finish(std::move(status));
  }

  // Shared with the waiter, which may look once more after this reactor is gone.
  std::shared_ptr<State> state_;
};

}  // namespace

bool Service::answer(grpc::ServerUnaryReactor* reactor, grpc::Status status) {
  inbox_.after_commit(
      [reactor, status = std::move(status)]() mutable { reactor->Finish(std::move(status)); });
  return true;
}

Result<Caller> Service::caller(const v1::Caller& c) const {
  Identity id = LOOM_TRY(munge_verify(c.credential()));
  return Caller{id.uid, id.user, in_group(id, config_.auth.admin_group), id.gid};
}

// ---- CLI ----

grpc::Status Service::Submit(grpc::ServerContext*, const v1::SubmitRequest* request,
                             v1::SubmitReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  auto ids = inbox_.call([&](Core& core) { return core.submit(*who, *request); });
  if (!ids) return to_grpc(ids.error());
  reply->set_job(ids->front().value());
  if (request->array_size() > 0) {
    for (JobId id : *ids) reply->add_elements(id.value());
  }
  return grpc::Status::OK;
}

grpc::Status Service::List(grpc::ServerContext*, const v1::ListRequest* request,
                           v1::ListReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  const std::size_t page = request->page_size() == 0
                               ? kMostPerPage
                               : std::min<std::size_t>(request->page_size(), kMostPerPage);
  std::vector<JobRow> rows = inbox_.call([&](Core& core) {
    reply->set_read_only(core.read_only().value_or(""));
    return core.jobs().list(*who, request->include_ended(), JobId(request->after()), page + 1);
  });
  if (rows.size() > page) {
    rows.pop_back();
    reply->set_next_after(rows.back().id.value());
  }
  for (const JobRow& row : rows) *reply->add_jobs() = info(row);
  return grpc::Status::OK;
}

grpc::Status Service::Acct(grpc::ServerContext*, const v1::AcctRequest* request,
                           v1::ListReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  controller::AcctQuery query;
  query.since = request->since();
  if (request->until() != 0) query.until = request->until();
  query.user = request->user();
  query.account = request->account();
  if (request->has_state()) query.state = request->state();
  query.after = JobId(request->after());
  query.limit = request->page_size() == 0
                    ? kMostPerPage
                    : std::min<std::size_t>(request->page_size(), kMostPerPage);
  auto page = inbox_.call([&](Core& core) { return core.jobs().accounting(*who, query); });
  if (!page) return to_grpc(page.error());
  for (const JobRow& row : page->jobs) *reply->add_jobs() = info(row);
  reply->set_next_after(page->next_after.value());
  return grpc::Status::OK;
}

grpc::Status Service::Show(grpc::ServerContext*, const v1::JobRequest* request,
                           v1::JobInfo* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::string read_only;
  auto row = inbox_.call([&](Core& core) {
    read_only = core.read_only().value_or("");
    return core.jobs().show(*who, JobId(request->job()), index_of(*request));
  });
  if (!row) return to_grpc(row.error());
  *reply = info(*row);
  reply->set_read_only(std::move(read_only));
  return grpc::Status::OK;
}

grpc::Status Service::Cancel(grpc::ServerContext*, const v1::JobRequest* request,
                             v1::CancelReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  auto status = inbox_.call(
      [&](Core& core) { return core.cancel(*who, JobId(request->job()), index_of(*request)); });
  return status ? grpc::Status::OK : to_grpc(status.error());
}

grpc::ServerWriteReactor<v1::JobInfo>* Service::Watch(grpc::CallbackServerContext*,
                                                      const v1::JobRequest* request) {
  auto who = caller(request->caller());
  if (!who) return WatchReactor::refused(to_grpc(who.error()));
  return new WatchReactor(inbox_, *who, *request);
}

grpc::Status Service::Nodes(grpc::ServerContext*, const v1::NodesRequest* request,
                            v1::NodesReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  *reply = inbox_.call([](Core& core) { return core.nodes(); });
  return grpc::Status::OK;
}

grpc::Status Service::Drain(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  auto status =
      inbox_.call([&](Core& core) { return core.drain(*who, request->node(), request->reason()); });
  if (!status) return to_grpc(status.error());
  spdlog::info("node {} drained by {}: {}", request->node(), who->user, request->reason());
  return grpc::Status::OK;
}

grpc::Status Service::Resume(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  auto status = inbox_.call([&](Core& core) { return core.resume(*who, request->node()); });
  if (!status) return to_grpc(status.error());
  spdlog::info("node {} resumed by {}", request->node(), who->user);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* Service::CreateBuffer(grpc::CallbackServerContext* context,
                                                const v1::BufferRequest* request,
                                                v1::BufferInfo* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto who = caller(request->caller());
  if (!who) {
    reactor->Finish(to_grpc(who.error()));
    return reactor;
  }
  // Answered once the agent has made it (mkfs and a mount: seconds at most).
  inbox_.wait([this, reactor, request, reply, who = *who, row = std::optional<BufferRow>(),
               deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60)](
                  Core& core, bool stopping) mutable {
    if (!row) {
      auto stored = core.create_buffer(who, *request);
      if (!stored) return answer(reactor, to_grpc(stored.error()));
      row = std::move(*stored);
    }
    const std::optional<std::string> made = core.buffer_made(*row);
    if (!made && !stopping && std::chrono::steady_clock::now() < deadline) return false;
    const std::string error = made.value_or("no answer from its node");
    if (!error.empty()) {
      core.drop_buffer(who, *row);
      return answer(
          reactor, {grpc::StatusCode::INTERNAL, fmt::format("{} could not make burst buffer {}: {}",
                                                            row->node, row->name, error)});
    }
    spdlog::info("burst buffer {} ({}) of {} made on {}", row->name,
                 format_bytes(Bytes(row->bytes)), row->user, row->node);
    *reply = core.buffer_info(*row);
    return answer(reactor, grpc::Status::OK);
  });
  return reactor;
}

grpc::Status Service::ListBuffers(grpc::ServerContext*, const v1::BuffersRequest* request,
                                  v1::BuffersReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  *reply = inbox_.call([&](Core& core) {
    v1::BuffersReply r;
    for (const BufferRow& row : core.jobs().buffers(*who)) *r.add_buffers() = core.buffer_info(row);
    return r;
  });
  return grpc::Status::OK;
}

grpc::Status Service::DestroyBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                                    v1::BufferReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  auto row = inbox_.call([&](Core& core) { return core.destroy_buffer(*who, *request); });
  return row ? grpc::Status::OK : to_grpc(row.error());
}

// ---- loom-rsh ----

grpc::ServerUnaryReactor* Service::Exec(grpc::CallbackServerContext* context,
                                        const v1::ExecRequest* request, v1::ExecReply* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto who = caller(request->caller());
  if (!who) {
    reactor->Finish(to_grpc(who.error()));
    return reactor;
  }
  if (auto arguments = launch::daemon_arguments({request->argv().begin(), request->argv().end()});
      !arguments) {
    reactor->Finish(to_grpc(arguments.error()));
    return reactor;
  }
  // Started once the job runs: its first node may start mpirun while others still stage
  // in. Answered with the daemon's end, which is the node's end of the job.
  inbox_.wait([this, reactor, context, request, reply, who = *who, node = std::optional<NodeId>()](
                  Core& core, bool stopping) mutable {
    const auto finish = [&](grpc::Status status) { return answer(reactor, std::move(status)); };
    if (stopping) return finish(kStopping);
    const JobId id(request->job());
    if (!node) {
      auto started = core.start_daemon(who, id, request->node(), *request);
      if (!started) return finish(to_grpc(started.error()));
      if (!*started) {
        return context->IsCancelled() ? finish({grpc::StatusCode::CANCELLED, "loom-rsh went away"})
                                      : false;
      }
      node = **started;
    }
    auto ended = core.daemon_end(id, *node);
    if (!ended) return finish(to_grpc(ended.error()));
    if (*ended) {
      reply->set_exit_code((*ended)->exit_code());
      if ((*ended)->has_signal()) reply->set_signal((*ended)->signal());
      reply->set_error((*ended)->error());
      return finish(grpc::Status::OK);
    }
    if (!context->IsCancelled()) return false;
    core.abandon_daemon(id, *node);
    return finish({grpc::StatusCode::CANCELLED, "loom-rsh went away"});
  });
  return reactor;
}

// ---- Agents ----

grpc::Status Service::Connect(grpc::ServerContext* context,
                              grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream) {
  v1::FromAgent first;
  if (!stream->Read(&first) || !first.has_hello()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an agent's first message must be its hello"};
  }
  // Only root may add a node: an agent runs jobs as any user.
  auto identity = munge_verify(first.hello().credential());
  if (!identity) return to_grpc(identity.error());
  if (identity->uid != 0) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("an agent must run as root; {} (uid {}) may not register a node",
                        identity->user, identity->uid)};
  }
  // Root on a host is not enough where the cluster has a CA: the host must hold its
  // certificate too, so that root on a laptop on the network adds no node.
  if (!tls_.from_cluster_host(*context)) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("agent {} from {} showed no certificate of the cluster's CA: an agent "
                        "presents its host's (tls.cert, tls.key)",
                        printable(first.hello().name()), context->peer())};
  }
  if (!first.hello().data_address().empty()) return serve_storage(context, stream, first.hello());
  auto out = std::make_shared<AgentStream>(context, stream, config_.controller.agent_queue,
                                           first.hello().name());
  auto node = inbox_.call([&](Core& core) { return core.agent_joined(first.hello(), out); });
  if (!node) return to_grpc(node.error());
  spdlog::info("agent {} connected from {}", first.hello().name(), context->peer());
  for (v1::FromAgent message; stream->Read(&message);) {
    inbox_.post([node = *node, message = std::move(message)](Core& core) {
      core.agent_message(node, message);
    });
  }
  // Once the core has let go of it, this is the last reference: its writer is joined
  // here, before the stream it writes to is gRPC's again.
  inbox_.call([&](Core& core) { core.agent_left(*node, out.get()); });
  return grpc::Status::OK;
}

grpc::Status Service::serve_storage(grpc::ServerContext* context,
                                    grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream,
                                    const v1::RegisterRequest& hello) {
  if (auto status = inbox_.call([&](Core& core) { return core.storage_joined(hello); }); !status)
    return to_grpc(status.error());
  v1::ToAgent registered;
  registered.mutable_registered();
  stream->Write(registered);
  spdlog::info("storage agent {} connected from {}", hello.name(), context->peer());
  for (v1::FromAgent message; stream->Read(&message);) {
  }
  inbox_.call([&](Core& core) { core.storage_left(hello); });
  return grpc::Status::OK;
}

}  // namespace loom::controller
