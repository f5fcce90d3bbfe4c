#!/usr/bin/env bash
# check.sh BUILD_DIR: installs that build into a temporary prefix, then uses it as a user
# and a sysadmin would: builds and runs a project against it with find_package(Loom) and
# with pkg-config loom, checks the systemd units with systemd-analyze verify (pointed at
# the installed programs), the installed loom.toml with loomctld --check-config, and that
# every installed program answers --help. Exits non-zero, saying what, when any step fails
# or prints other than expected.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
for f in bin/loom bin/loomd bin/loomctld bin/loom-keeper bin/loom-h5skeleton bin/loom-rank bin/loom-rsh bin/loom-fabric-bw \
         include/loom/hwtopo/load.hpp include/loom/proto/types.pb.h include/loom/proto/controller.grpc.pb.h lib/cmake/Loom/LoomConfig.cmake lib/pkgconfig/loom.pc \
         lib/systemd/system/loomctld.service lib/systemd/system/loomd.service etc/loom/loom.toml; do
  [[ -e $work/prefix/$f ]] || { echo "check.sh: $f was not installed" >&2; exit 1; }
done
cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/configure.log" ||
  { cat "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" >"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
out=$("$work/build/downstream")
[[ $out == "numa=4 cores=16 pus=32 provider=tcp;ofi_rxm" ]] || { echo "check.sh: find_package(Loom): got '$out'" >&2; exit 1; }
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
# shellcheck disable=SC2046  # pkg-config's words are meant to split
c++ -std=c++23 "$here/main_pc.cpp" -o "$work/pc" $(pkg-config --cflags --libs loom)
out=$("$work/pc")
[[ $out == "cores=6" ]] || { echo "check.sh: pkg-config loom: got '$out'" >&2; exit 1; }
units=$work/units
mkdir "$units"
for unit in loomctld loomd; do
  sed -E "s|^(ExecStart(Pre)?=)[^ ]*/(loom[a-z]*)|\1$work/prefix/bin/\3|" "$work/prefix/lib/systemd/system/$unit.service" >"$units/$unit.service"
done
verify=$(systemd-analyze verify --man=no "$units/loomctld.service" "$units/loomd.service" 2>&1) ||
  { echo "check.sh: systemd-analyze verify failed: $verify" >&2; exit 1; }
[[ -z $verify ]] || { echo "check.sh: systemd-analyze verify: $verify" >&2; exit 1; }
grep -qx 'KillMode=process' "$units/loomd.service" || { echo "check.sh: loomd.service would kill the jobs with loomd" >&2; exit 1; }
"$work/prefix/bin/loomctld" --check-config "$work/prefix/etc/loom/loom.toml" >/dev/null
printf '[controller]\nadress = "x"\n' >"$work/bad.toml"
if err=$("$work/prefix/bin/loomctld" --check-config "$work/bad.toml" 2>&1); then
  echo "check.sh: loomctld --check-config accepted an unknown key" >&2; exit 1
fi
[[ $err == *"bad.toml:2"*"controller.adress"* ]] || { echo "check.sh: --check-config said: $err" >&2; exit 1; }
# TLS files are checked too: a host key others may read is refused, naming it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -config /dev/null \
  -keyout "$work/host.key" -out "$work/host.pem" -subj /CN=host -addext basicConstraints=critical,CA:TRUE 2>/dev/null
chmod 0644 "$work/host.key"
printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' "$work/host.pem" "$work/host.pem" "$work/host.key" >"$work/tls.toml"
if err=$("$work/prefix/bin/loomctld" --check-config "$work/tls.toml" 2>&1); then
  echo "check.sh: loomctld --check-config accepted a key others may read" >&2; exit 1
fi
[[ $err == *"tls.key $work/host.key: group or others may read it"* ]] || { echo "check.sh: --check-config said: $err" >&2; exit 1; }
chmod 0600 "$work/host.key"
"$work/prefix/bin/loomctld" --check-config "$work/tls.toml" | grep -q "gRPC TLS (CA $work/host.pem" ||
  { echo "check.sh: --check-config did not say TLS" >&2; exit 1; }
# Every installed program answers --help with its usage, on stdout, and exits 0.
for program in "$work"/prefix/bin/*; do
  help=$("$program" --help 2>"$work/help.err") ||
    { echo "check.sh: $(basename "$program") --help failed: $(cat "$work/help.err")" >&2; exit 1; }
  [[ $help == *[Uu]sage:* ]] || { echo "check.sh: $(basename "$program") --help printed no usage: $help" >&2; exit 1; }
done
echo "installed tree: find_package(Loom) and pkg-config loom build and run; units verify; loom.toml checks; every program has --help"
