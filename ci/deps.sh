#!/usr/bin/env bash
# Installs the system packages that building and testing dos need, if missing.
# Called by ci/test.sh, ci/demo.sh and .ci/run; safe to run again.
#
#   libhwloc-dev libudev-dev pkg-config   hwloc, for dosrun's binding and --topology
#   iproute2 openssh-server openssh-client nftables
#                                         the namespace test cluster (ci/cluster.sh)
#   cmake clang libclang-dev              dos-transport's `verbs` feature (rdma-mummy-sys
#                                         builds its libibverbs loader with cmake and
#                                         generates bindings with libclang); libibverbs
#                                         itself is loaded at run time, not needed to build
#   tshark python3                        the soft-RoCE capture check (tshark decodes the
#                                         traffic, ci/icrc_check.py checks every ICRC)
#   fuse3 fio                             the dosfs FUSE mount's tests (fs/tests/mount.rs):
#                                         fusermount3, and fio --verify through the mount
#   gcc g++                               the MPI C interface's tests (mpi/tests): C and C++
#                                         programs compiled with dosmpicc/dosmpicxx
#   mpich                                 MPICH programs under dosrun --mpi pmi1
#                                         (launcher/tests/mpich.rs compiles with mpicc.mpich)
#   slurm-wlm                             the Slurm test cluster (ci/cluster.sh slurm,
#                                         launcher/tests/slurm.rs); a policy-rc.d that
#                                         exits 101 keeps its post-install scripts (and
#                                         munge's) from starting the system's daemons
set -euo pipefail

packages=(libhwloc-dev libudev-dev pkg-config iproute2 openssh-server openssh-client nftables
          cmake clang libclang-dev tshark python3 fuse3 fio gcc g++ mpich slurm-wlm)
missing=()
for p in "${packages[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *'ok installed'* ]] || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "deps: missing packages (${missing[*]}) and not root: install them first" >&2
        exit 1
    fi
fi
echo "deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update
# No service starts while installing (slurmctld, slurmd, munged): the tests
# start their own. Ours only if there is none.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
fi
rc=0
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}" || rc=$?
if [ "$own_policy" = 1 ]; then
    "${sudo[@]}" rm -f "$policy"
fi
exit "$rc"
