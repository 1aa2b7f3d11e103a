#!/usr/bin/env bash
# Start-up of an MPICH program under dosrun --mpi pmi1 against MPICH's own
# launcher, and the cost of the PMI-1 bridges, measured in one run,
# interleaved. Needs mpich (ci/deps.sh) and a release dosrun.
#
#   ci/bench-mpich.sh [TRIALS] [RANKS]     defaults 15 and 3
#
# Prints, per command, the median and the minimum wall time in ms.
set -euo pipefail
trials=${1:-15}
n=${2:-3}
cd "$(dirname "$0")/.."
cargo build -q --release -p dos-launcher
dosrun=target/release/dosrun
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mpicc.mpich -O2 -o "$dir/cpi" launcher/tests/mpich/cpi.c -lm
cases=(
	"$dosrun -n $n true"
	"$dosrun --mpi pmi1 -n $n true"
	"$dosrun --mpi pmi1 -n $n $dir/cpi"
	"mpiexec.hydra -n $n $dir/cpi"
)
for i in "${!cases[@]}"; do : >"$dir/t$i"; done
for _ in $(seq "$trials"); do
	for i in "${!cases[@]}"; do
		t0=$(date +%s%N)
		${cases[$i]} >/dev/null 2>&1
		t1=$(date +%s%N)
		echo $(((t1 - t0) / 1000)) >>"$dir/t$i"
	done
done
for i in "${!cases[@]}"; do
	sort -n "$dir/t$i" | awk -v what="${cases[$i]//$dir\//}" '
		{ v[NR] = $1 }
		END { printf "%-44s median %7.1f ms  min %7.1f ms\n", what, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
done
