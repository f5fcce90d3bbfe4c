# Loom's Spack recipe: `spack repo add <checkout>/spack/spack_repo/loom`, then
# `spack install loom`. docs/admin-guide.md says more; ../shared/SPACK.md how it is verified.

import json
import socket
import subprocess

from spack_repo.builtin.build_systems.cmake import CMakePackage, generator

from spack.package import *


class Loom(CMakePackage):
    """HPC resource and data fabric: a hwloc-aware scheduler that gives MPI jobs
    NUMA-pinned cores, memory and node-local NVMe burst-buffer slices, and a libfabric
    RDMA data plane that stages HDF5 datasets between storage and compute nodes."""

    homepage = "https://github.com/loom-hpc/loom"
    # A site building from its own clone sets `packages: loom: package_attributes: git: URL`.
    git = "https://github.com/loom-hpc/loom.git"

    # Releases are tags vX.Y.Z, each with its commit: Spack checks that the tag still names
    # it, and records the version it built.
    version("0.1.0", tag="v0.1.0", commit="b87a89c35457560075674f6bd6749826bbf23dac")
    version("main", branch="main")

    variant(
        "mpi",
        default=True,
        description="MPI jobs: an MPI whose mpirun and orted the nodes run, and the MPI "
        "test programs (Loom links no MPI library)",
    )
    variant(
        "verbs",
        default=False,
        description="InfiniBand/RoCE: rdma-core's user-space verbs drivers, which "
        "libfabric's verbs provider loads (a Spack-built libfabric also needs fabrics=verbs)",
    )

    generator("ninja")

    depends_on("c", type="build")
    depends_on("cxx", type="build")
    depends_on("cmake@3.25:", type="build")
    depends_on("pkgconfig", type="build")

    # Build and link: Loom's programs link these, and its static libraries need them
    # again wherever a project links Loom (find_package(Loom), pkg-config loom).
    depends_on("hwloc@2.9:")
    depends_on("libfabric@1.17:")
    # Datasets are staged as stored (chunks by address): Loom links the serial library,
    # and says so, so that the spec records what was linked.
    depends_on("hdf5@1.10.5: ~mpi")
    # Every request between Loom's processes and from users carries a Munge credential.
    depends_on("munge")
    depends_on("pmix@4:")  # loom-pmix, a job's PMIx server (--mpi=pmix)
    depends_on("grpc")
    depends_on("openssl")  # checks tls.* certificates (loom/proto/tls.hpp)
    depends_on("protobuf")
    depends_on("sqlite@3.24:")  # upserts (ON CONFLICT DO UPDATE) in the controller's store
    depends_on("tomlplusplus@3:")
    depends_on("spdlog")
    depends_on("fmt")
    depends_on("nlohmann-json", type=("build", "link"))
    depends_on("cli11", type=("build", "link"))

    depends_on("mpi", when="+mpi", type=("build", "run"))
    depends_on("rdma-core", when="+verbs", type="run")

    depends_on("googletest", type="test")
    # The tests run Python scripts (the recipe's own check among them): this Python, not
    # whichever python3 comes first on PATH.
    depends_on("python@3:", type="test")

    conflicts("%gcc@:11", msg="Loom is written in C++23 as GCC 12 has it")
    conflicts("platform=darwin", msg="Loom binds with Linux cgroups, namespaces and loop devices")

    def cmake_args(self):
        return [
            self.define("LOOM_BUILD_TESTS", self.run_tests),
            self.define_from_variant("LOOM_WITH_MPI", "mpi"),
            self.define("LOOM_WARNINGS_AS_ERRORS", False),
        ] + (
            [self.define("Python3_EXECUTABLE", self.spec["python"].command.path)]
            if self.run_tests
            else []
        )

    def check(self):
        """The unit tests: they need no daemon, user or device of the machine (the
        integration and end-to-end suites run Munge, clusters and MPI jobs as root)."""
        with working_dir(self.build_directory):
            ctest("--label-regex", "^unit$", "--output-on-failure", "-j", str(make_jobs))

    def test_topo_synthetic(self):
        """loom topo describes a synthetic two-socket node, as a table and as JSON"""
        loom = which(self.prefix.bin.loom)
        shape = "pack:2 numa:1(memory=64GiB) core:4 pu:2"
        out = loom("topo", "--synthetic", shape, output=str, error=str)
        assert "2 packages, 2 NUMA domains, 8 cores, 16 PUs, 128 GiB memory" in out, out
        topo = json.loads(loom("topo", "--synthetic", shape, "--json", output=str, error=str))
        assert len(topo["core_map"]) == 8, topo
        assert [c["pus"] for c in topo["core_map"]][:2] == [[0, 1], [2, 3]], topo

    def test_check_config(self):
        """loomctld accepts the installed /etc/loom/loom.toml and names a bad key"""
        loomctld = which(self.prefix.bin.loomctld)
        installed = join_path(self.prefix.etc.loom, "loom.toml")
        out = loomctld("--check-config", installed, output=str, error=str)
        assert "valid" in out, out
        with open("bad.toml", "w") as f:
            f.write("[controller]\nadress = '127.0.0.1:1'\n")
        out = loomctld("--check-config", "bad.toml", output=str, error=str, fail_on_error=False)
        assert loomctld.returncode != 0, out
        assert "controller.adress" in out, out

    def test_loopback_transfer(self):
        """loom-fabric-bw writes 1 MiB messages to itself over libfabric's tcp;ofi_rxm"""
        bw = self.prefix.bin.join("loom-fabric-bw")
        with socket.socket() as s:  # a free port for the name exchange
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        provider = ["-p", "tcp;ofi_rxm", "-P", port]
        server = subprocess.Popen([bw, *provider], stderr=subprocess.PIPE, text=True)
        try:
            # The server says so once it listens; a server that failed closes the pipe.
            ready = server.stderr.readline()
            assert "waiting on port" in ready, ready
            client = subprocess.run(
                [bw, *provider, "-S", "1M", "-I", "50", "--json", "127.0.0.1"],
                capture_output=True, text=True, timeout=120,
            )
            assert client.returncode == 0, client.stderr
            result = json.loads(client.stdout)["results"][0]
            assert result["bytes"] == 1 << 20 and result["iters"] == 50, result
            assert result["bw_avg_gbps"] > 0, result
        finally:
            server.kill()
            server.wait()
