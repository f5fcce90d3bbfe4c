// loom-rsh HOST COMMAND...: Open MPI's rsh agent in a Loom job (plm_rsh_agent), in place of
// ssh. It asks the controller to start COMMAND, which must be Open MPI's daemon (orted), on
// HOST, a node of the caller's own running job (LOOM_JOB_ID); the node's agent runs it as
// the job's user in the job's cgroup there. The caller is proven by a Munge credential; the
// controller and the agent check everything again, so this program grants nothing itself.
// It returns when the daemon ends, with its status; 255 when it could not run, as ssh does.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "loom/client/client.hpp"
#include "loom/common/config.hpp"
#include "loom/launch/mpi.hpp"

namespace {

int fail(const std::string& message) {
  (void)std::fprintf(stderr, "loom-rsh: %s\n", message.c_str());
  return 255;
}

}  // namespace

constexpr const char* kUsage =
    "usage: loom-rsh HOST COMMAND...\n"
    "Open MPI's rsh agent inside a Loom MPI job (mpirun --mca plm_rsh_agent loom-rsh), in place\n"
    "of ssh: asks the controller to start COMMAND, which must be Open MPI's orted, on HOST, a "
    "node\n"
    "of your running job LOOM_JOB_ID; that node's agent runs it as you in the job's cgroup. "
    "Proves\n"
    "you with a Munge credential. Exits with the daemon's status; 255 when it could not run.\n";

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  if (argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    (void)std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 3)
    return fail("usage: loom-rsh HOST COMMAND... (Open MPI's rsh agent inside a Loom job)");
  const char* job = std::getenv("LOOM_JOB_ID");
  if (job == nullptr || *job == '\0')
    return fail(
        "not inside a Loom job (LOOM_JOB_ID is not set): there is no node to start anything on");
  auto job_ref = loom::client::parse_job_ref(job);
  if (!job_ref || job_ref->index)
    return fail(fmt::format("LOOM_JOB_ID \"{}\" is not a job id", job));
  // Open MPI passes the daemon's command as words quoted for a remote shell.
  std::string line;
  for (int i = 2; i < argc; ++i) line += std::string(i > 2 ? " " : "") + argv[i];
  auto words = loom::launch::split_command(line);
  if (!words) return fail(words.error().message());
  if (auto arguments = loom::launch::daemon_arguments(*words); !arguments)
    return fail(arguments.error().message());

  auto config = loom::start_program("loom-rsh", std::nullopt);
  if (!config) return fail(config.error().to_string());
  // The call lasts as long as the daemon. A controller that restarts meanwhile breaks it:
  // asked again, the controller waits until it has found the job again, and the node's
  // agent, whose daemon runs already, starts nothing twice. A reply of UNAVAILABLE means
  // the controller was unreachable, or stopping, and is retried (bounded: each connection
  // waits controller.connect_timeout).
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    auto client = loom::client::connect("", *config);
    if (!client) {
      if (attempt < kAttempts) continue;
      return fail(client.error().to_string());
    }
    auto caller = loom::client::me();  // fresh each time: Munge refuses a credential replayed
    if (!caller) return fail(caller.error().to_string());
    loom::v1::ExecRequest request;
    *request.mutable_caller() = *caller;
    request.set_job(job_ref->job);
    request.set_node(argv[1]);
    for (const std::string& word : *words) request.add_argv(word);
    grpc::ClientContext context;
    loom::v1::ExecReply reply;
    const grpc::Status status = client->stub->Exec(&context, request, &reply);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && attempt < kAttempts) continue;
    if (!status.ok()) return fail(client->error(status).message());
    if (!reply.error().empty()) return fail(fmt::format("on {}: {}", argv[1], reply.error()));
    return reply.exit_code();
  }
}
