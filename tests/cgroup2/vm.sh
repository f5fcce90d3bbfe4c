#!/usr/bin/env bash
# vm.sh [--mem SIZE] -- CMD [ARGS...]: runs CMD as root on a node with cgroup v2 alone.
#
# This machine's kernel keeps its controllers in cgroup v1 hierarchies, some of them the
# machine's own, which no test may move. So the node is a User-Mode Linux kernel (Debian's
# user-mode-linux) booted over this machine's own root filesystem (hostfs: the same files,
# in place), with cgroup v2 mounted alone at /sys/fs/cgroup (memory, pids, cpu and io; no
# cpuset, as it has one CPU), munged running, loopback up and the loop driver loaded for
# burst-buffer images. What hostfs cannot do, a tmpfs does: files there keep their owners
# (hostfs writes every file as the host's root), so TMPDIR and TEST_TMPDIR point to one.
# No bridge driver: loom up --netns cannot run inside.
#
# Prints CMD's output and exits with its status; 125 when the kernel did not run CMD (with
# the end of its log), so that a kernel that does not boot fails the caller, never skips.
set -euo pipefail
mem=2G
if [[ ${1:-} == --mem ]]; then mem=$2; shift 2; fi
[[ ${1:-} == -- ]] && shift
(($#)) || { echo "usage: $0 [--mem SIZE] -- CMD [ARGS...]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: needs root (the kernel runs as root over /)" >&2; exit 2; }
command -v linux.uml >/dev/null || { echo "$0: linux.uml is missing (apt-get install user-mode-linux)" >&2; exit 125; }

work=$(mktemp -d /tmp/loom-cgroup2.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '%q ' "$@" > "$work/command"
cat > "$work/init" <<INIT
#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/munge /run/loom-tmp && chown munge:munge /run/munge && chmod 1777 /run/loom-tmp
export TMPDIR=/run/loom-tmp TEST_TMPDIR=/run/loom-tmp
ip link set lo up
modules=/usr/lib/uml/modules/\$(uname -r)/kernel/drivers/block
insmod \$modules/loop.ko 2>/dev/null || true
hostname loom-cgroup2
runuser -u munge -- /usr/sbin/munged
cd "$PWD"
sh -c "\$(cat $work/command)" > $work/output 2>&1
echo \$? > $work/status
sync
halt -f
INIT
chmod +x "$work/init"
timeout 900 linux.uml mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw \
  init="$work/init" con=null con0=null,fd:2 >/dev/null 2>"$work/kernel.log" </dev/null || true
cat "$work/output" 2>/dev/null || true
[[ -f $work/status ]] && exit "$(cat "$work/status")"
echo "$0: the cgroup v2 kernel did not run the command; the end of its log:" >&2
tail -20 "$work/kernel.log" >&2
exit 125
