// loom-pmix: a job's PMIx server on one node (--mpi=pmix). The agent starts it as the job's
// user, in the job's cgroup, through the keeper like any task, with its end of a channel
// as descriptor 4 (kTaskChannelFd). It reads the job's namespace from the agent, registers
// it and each local rank with PMIx (Debian 12's OpenPMIx 4.2), answers with each rank's
// environment (PMIx_server_setup_fork), and from then on tells the agent of each rank's
// PMIx_Abort and PMIx_Finalize while it serves the ranks the agent starts. It ends on
// SIGTERM (the agent's, once the ranks are gone), not when the channel closes: an agent
// that restarts leaves the job's ranks running, and they need their server.
//
// Its ranks connect over loopback TCP and prove their uid with a Munge credential (psec
// munge), so that no other user's process on the node can pose as one of the job's ranks.
#include <pmix.h>
#include <pmix_server.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "loom/common/task_channel.hpp"
#include "loom/launch/pmix_channel.hpp"
#include "loom/proto/pmix.pb.h"

namespace {

namespace launch = loom::launch;
using loom::kTaskChannelFd;
namespace v1 = loom::v1;

std::mutex channel_mutex;  // PMIx's progress thread and main both write

void tell(const v1::FromPmix& event) {
  std::lock_guard lock(channel_mutex);
  // An agent gone (restarting) cannot hear it; the job runs on regardless.
  (void)launch::write_message(kTaskChannelFd, event);
}

void fail(const std::string& error) {
  v1::FromPmix event;
  event.mutable_failed()->set_error(error);
  tell(event);
  (void)std::fprintf(stderr, "loom-pmix: %s\n", error.c_str());
  std::exit(1);
}

std::string status_text(pmix_status_t status) { return PMIx_Error_string(status); }

pmix_status_t connected(const pmix_proc_t* proc, void* /*server_object*/,
                        pmix_op_cbfunc_t /*cbfunc*/, void* /*cbdata*/) {
  v1::FromPmix event;
  event.mutable_connected()->set_rank(proc->rank);
  tell(event);
  return PMIX_OPERATION_SUCCEEDED;
}

pmix_status_t finalized(const pmix_proc_t* proc, void* /*server_object*/,
                        pmix_op_cbfunc_t /*cbfunc*/, void* /*cbdata*/) {
  v1::FromPmix event;
  event.mutable_finalized()->set_rank(proc->rank);
  tell(event);
  return PMIX_OPERATION_SUCCEEDED;
}

// The agent kills the job: the caller's PMIx_Abort does not return, as the standard has it.
pmix_status_t aborted(const pmix_proc_t* proc, void* /*server_object*/, int status,
                      const char message[], pmix_proc_t /*procs*/[], size_t /*nprocs*/,
                      pmix_op_cbfunc_t /*cbfunc*/, void* /*cbdata*/) {
  v1::FromPmix event;
  event.mutable_abort()->set_rank(proc->rank);
  event.mutable_abort()->set_status(status);
  event.mutable_abort()->set_message(message != nullptr ? message : "");
  tell(event);
  return PMIX_OPERATION_SUCCEEDED;
}

bool one_node = true;  // set once, before any rank can fence

void release(void* data) { std::free(data); }

// On one node every rank of the job is this server's: the fence's data is all there is, and
// PMIx takes it back as each node's contributions one after another, here just one.
pmix_status_t fence(const pmix_proc_t /*procs*/[], size_t /*nprocs*/, const pmix_info_t /*info*/[],
                    size_t /*ninfo*/, char* data, size_t ndata, pmix_modex_cbfunc_t cbfunc,
                    void* cbdata) {
  if (!one_node) {
    v1::FromPmix event;
    event.mutable_failed()->set_error("a PMIx fence across nodes is not served yet");
    tell(event);
    return PMIX_ERR_NOT_SUPPORTED;
  }
  char* copy = nullptr;
  if (ndata > 0) {
    copy = static_cast<char*>(std::malloc(ndata));
    if (copy == nullptr) return PMIX_ERR_NOMEM;
    std::memcpy(copy, data, ndata);
  }
  cbfunc(PMIX_SUCCESS, copy, ndata, cbdata, release, copy);
  return PMIX_SUCCESS;
}

// The job's namespace as PMIx's clients (Open MPI's ranks) look it up.
class Namespace {
 public:
  explicit Namespace(const v1::PmixJob& job) : job_(job), list_(PMIx_Info_list_start()) {
    std::uint32_t size = 0;
    std::string hosts, ppn;
    for (const v1::PmixNode& node : job.nodes()) {
      size += node.ranks();
      hosts += (hosts.empty() ? "" : ",") + node.name();
      std::string ranks;
      for (std::uint32_t r = 0; r < node.ranks(); ++r)
        ranks += (r == 0 ? "" : ",") + std::to_string(node.first_rank() + r);
      ppn += (ppn.empty() ? "" : ";") + ranks;
    }
    const v1::PmixNode& here = job.nodes(static_cast<int>(job.node_index()));
    std::string peers;
    for (const v1::PmixRank& r : job.local())
      peers += (peers.empty() ? "" : ",") + std::to_string(r.rank());
    add_string(PMIX_JOBID, job.nspace());
    add_regex(PMIX_NODE_MAP, hosts, PMIx_generate_regex);
    add_regex(PMIX_PROC_MAP, ppn, PMIx_generate_ppn);
    add_string(PMIX_NODE_LIST, hosts);
    add_string(PMIX_LOCAL_PEERS, peers);
    add_string(PMIX_TMPDIR, job.tmpdir());
    add_string(PMIX_NSDIR, job.tmpdir());
    add_string(PMIX_HOSTNAME, here.name());
    add_bool(PMIX_TDIR_RMCLEAN, true);  // the agent removes the job's directory
    add_u32(PMIX_UNIV_SIZE, size);
    add_u32(PMIX_JOB_SIZE, size);
    add_u32(PMIX_MAX_PROCS, size);
    add_u32(PMIX_JOB_NUM_APPS, 1);
    add_u32(PMIX_APPNUM, 0);
    add_u32(PMIX_NUM_NODES, static_cast<std::uint32_t>(job.nodes_size()));
    add_u32(PMIX_NODEID, job.node_index());
    add_u32(PMIX_LOCAL_SIZE, static_cast<std::uint32_t>(job.local_size()));
    add_u32(PMIX_NODE_SIZE, static_cast<std::uint32_t>(job.local_size()));
    pmix_rank_t leader = here.first_rank();
    add(PMIX_LOCALLDR, &leader, PMIX_PROC_RANK);
    for (std::uint32_t n = 0; n < static_cast<std::uint32_t>(job.nodes_size()); ++n) {
      const v1::PmixNode& node = job.nodes(static_cast<int>(n));
      for (std::uint32_t r = 0; r < node.ranks(); ++r) add_rank(node, n, r);
    }
  }
  ~Namespace() { PMIx_Info_list_release(list_); }
  Namespace(const Namespace&) = delete;
  Namespace& operator=(const Namespace&) = delete;

  // Registers it, and each local rank as the job's user's.
  void register_all() {
    pmix_data_array_t info;
    PMIX_DATA_ARRAY_CONSTRUCT(&info, 0, PMIX_INFO);
    if (const pmix_status_t s = PMIx_Info_list_convert(list_, &info); s != PMIX_SUCCESS)
      fail("the job's PMIx namespace: " + status_text(s));
    const pmix_status_t registered = PMIx_server_register_nspace(
        job_.nspace().c_str(), job_.local_size(), static_cast<pmix_info_t*>(info.array), info.size,
        nullptr, nullptr);
    PMIX_DATA_ARRAY_DESTRUCT(&info);
    if (registered != PMIX_OPERATION_SUCCEEDED && registered != PMIX_SUCCESS)
      fail("PMIx_server_register_nspace: " + status_text(registered));
    for (const v1::PmixRank& r : job_.local()) {
      const pmix_proc_t proc = this->proc(r.rank());
      const pmix_status_t s =
          PMIx_server_register_client(&proc, ::getuid(), ::getgid(), nullptr, nullptr, nullptr);
      if (s != PMIX_OPERATION_SUCCEEDED && s != PMIX_SUCCESS)
        fail("PMIx_server_register_client: " + status_text(s));
    }
  }

  pmix_proc_t proc(std::uint32_t rank) const {
    pmix_proc_t p;
    PMIX_LOAD_PROCID(&p, job_.nspace().c_str(), rank);
    return p;
  }

 private:
  void add(const char* key, const void* value, pmix_data_type_t type) {
    if (const pmix_status_t s = PMIx_Info_list_add(list_, key, value, type); s != PMIX_SUCCESS)
      fail(std::string("the job's PMIx namespace, ") + key + ": " + status_text(s));
  }
  void add_string(const char* key, const std::string& value) {
    add(key, value.c_str(), PMIX_STRING);
  }
  void add_u32(const char* key, std::uint32_t value) { add(key, &value, PMIX_UINT32); }
  void add_bool(const char* key, bool value) { add(key, &value, PMIX_BOOL); }
  void add_regex(const char* key, const std::string& raw,
                 pmix_status_t (*generate)(const char*, char**)) {
    char* regex = nullptr;
    if (const pmix_status_t s = generate(raw.c_str(), &regex); s != PMIX_SUCCESS)
      fail(std::string("the job's PMIx namespace, ") + key + ": " + status_text(s));
    add_string(key, regex);
    std::free(regex);
  }
  // What PMIx's clients ask of each rank: where it is, and its place there.
  void add_rank(const v1::PmixNode& node, std::uint32_t node_id, std::uint32_t local) {
    void* rank_list = PMIx_Info_list_start();
    const pmix_rank_t rank = node.first_rank() + local;
    const auto local_rank = static_cast<std::uint16_t>(local);
    (void)PMIx_Info_list_add(rank_list, PMIX_RANK, &rank, PMIX_PROC_RANK);
    (void)PMIx_Info_list_add(rank_list, PMIX_GLOBAL_RANK, &rank, PMIX_PROC_RANK);
    (void)PMIx_Info_list_add(rank_list, PMIX_APP_RANK, &rank, PMIX_PROC_RANK);
    (void)PMIx_Info_list_add(rank_list, PMIX_LOCAL_RANK, &local_rank, PMIX_UINT16);
    (void)PMIx_Info_list_add(rank_list, PMIX_NODE_RANK, &local_rank, PMIX_UINT16);
    (void)PMIx_Info_list_add(rank_list, PMIX_NODEID, &node_id, PMIX_UINT32);
    const std::uint32_t app = 0;
    (void)PMIx_Info_list_add(rank_list, PMIX_APPNUM, &app, PMIX_UINT32);
    (void)PMIx_Info_list_add(rank_list, PMIX_HOSTNAME, node.name().c_str(), PMIX_STRING);
    for (const v1::PmixRank& r : job_.local()) {
      if (r.rank() != rank) continue;
      std::string cpus;  // hwloc's list syntax: Open MPI computes the rank's locality from it
      for (std::uint32_t pu : r.cpus()) cpus += (cpus.empty() ? "" : ",") + std::to_string(pu);
      (void)PMIx_Info_list_add(rank_list, PMIX_CPUSET, cpus.c_str(), PMIX_STRING);
    }
    pmix_data_array_t array;
    PMIX_DATA_ARRAY_CONSTRUCT(&array, 0, PMIX_INFO);
    const pmix_status_t s = PMIx_Info_list_convert(rank_list, &array);
    PMIx_Info_list_release(rank_list);
    if (s != PMIX_SUCCESS) fail("the job's PMIx namespace, rank data: " + status_text(s));
    add(PMIX_PROC_DATA, &array, PMIX_DATA_ARRAY);
    PMIX_DATA_ARRAY_DESTRUCT(&array);
  }

  const v1::PmixJob& job_;
  void* list_;
};

constexpr const char* kUsage =
    "usage: loom-pmix\n"
    "A job's PMIx server on one node, started by loomd for --mpi=pmix, not run by hand: it\n"
    "reads the job's namespace on descriptor 4 and serves the node's ranks until SIGTERM.\n";

}  // namespace

// NOLINTNEXTLINE(bugprone-exception-escape): an escaping exception is a bug, seen as a core
int main(int argc, char** argv) {
  if (argc > 1) {
    const bool help = std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h";
    (void)std::fputs(kUsage, help ? stdout : stderr);
    return help ? 0 : 2;
  }
  struct stat channel {};
  if (::fstat(kTaskChannelFd, &channel) != 0 || !S_ISSOCK(channel.st_mode)) {
    (void)std::fputs(kUsage, stderr);
    return 2;
  }
  // Blocked before PMIx starts its threads, so that only sigwait below takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  v1::PmixJob job;
  if (auto read = launch::read_message(kTaskChannelFd, job); !read)
    fail("the job's namespace from the agent: " + read.error().message());
  if (job.nodes_size() == 0 || job.node_index() >= static_cast<unsigned>(job.nodes_size()) ||
      job.local_size() == 0)
    fail("the job's namespace from the agent names no rank here");
  one_node = job.nodes_size() == 1;
  if (::mkdir(job.tmpdir().c_str(), 0700) != 0 && errno != EEXIST)
    fail("cannot make " + job.tmpdir() + ": " + std::strerror(errno));
  // Munge proves each rank's uid to this server; PMIx's own "native" check cannot over TCP.
  ::setenv("PMIX_MCA_psec", "munge", 1);

  pmix_server_module_t module{};
  module.client_connected = connected;
  module.client_finalized = finalized;
  module.abort = aborted;
  module.fence_nb = fence;
  void* init = PMIx_Info_list_start();
  const pmix_rank_t server_rank = job.node_index();
  (void)PMIx_Info_list_add(init, PMIX_SERVER_TMPDIR, job.tmpdir().c_str(), PMIX_STRING);
  (void)PMIx_Info_list_add(init, PMIX_SYSTEM_TMPDIR, job.tmpdir().c_str(), PMIX_STRING);
  (void)PMIx_Info_list_add(init, PMIX_SERVER_RANK, &server_rank, PMIX_PROC_RANK);
  const std::string& host = job.nodes(static_cast<int>(job.node_index())).name();
  (void)PMIx_Info_list_add(init, PMIX_HOSTNAME, host.c_str(), PMIX_STRING);
  pmix_data_array_t init_info;
  PMIX_DATA_ARRAY_CONSTRUCT(&init_info, 0, PMIX_INFO);
  (void)PMIx_Info_list_convert(init, &init_info);
  PMIx_Info_list_release(init);
  if (const pmix_status_t s =
          PMIx_server_init(&module, static_cast<pmix_info_t*>(init_info.array), init_info.size);
      s != PMIX_SUCCESS)
    fail("PMIx_server_init: " + status_text(s));
  PMIX_DATA_ARRAY_DESTRUCT(&init_info);

  Namespace space(job);
  space.register_all();
  v1::FromPmix ready;
  for (const v1::PmixRank& r : job.local()) {
    const pmix_proc_t proc = space.proc(r.rank());
    char** environment = nullptr;
    if (const pmix_status_t s = PMIx_server_setup_fork(&proc, &environment); s != PMIX_SUCCESS)
      fail("PMIx_server_setup_fork: " + status_text(s));
    v1::PmixRankEnvironment* out = ready.mutable_ready()->add_ranks();
    out->set_rank(r.rank());
    for (char** e = environment; e != nullptr && *e != nullptr; ++e) {
      const std::string entry = *e;
      if (const std::size_t eq = entry.find('='); eq != std::string::npos)
        (*out->mutable_environment())[entry.substr(0, eq)] = entry.substr(eq + 1);
      std::free(*e);
    }
    std::free(static_cast<void*>(environment));
  }
  tell(ready);

  int signal = 0;
  while (sigwait(&stop, &signal) != 0) {
  }
  (void)PMIx_server_finalize();
  return 0;
}
