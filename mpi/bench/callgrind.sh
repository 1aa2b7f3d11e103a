#!/bin/bash
# Instructions per call of the C layer's hot path (callgrind; deterministic, so a
# loaded machine does not change the counts). Needs valgrind and a release build:
#   cargo build --release -p dos-mpi && cargo build --release -p dos-launcher --bin dosrun
#   mpi/bench/callgrind.sh [OUTDIR]
# Prints the inclusive count of each function divided by its calls.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
rel=$repo/target/release
out=${1:-$rel/callgrind}
mkdir -p "$out"
export DOSMPICC_LIBDIR=$rel
for p in cc_small cc_put cc_block cc_bw; do
  "$repo/mpi/bin/dosmpicc" -O2 -o "$out/$p" "$here/$p.c"
done
# profile name, program, its arguments
for run in "cc_small cc_small" "cc_put cc_put" "cc_block1 cc_block 1" "cc_block2 cc_block 2" "cc_block256 cc_block 256" "cc_bw cc_bw"; do
  set -- $run
  name=$1 prog=$2; shift 2
  "$rel/dosrun" -n 1 valgrind --tool=callgrind --callgrind-out-file="$out/$name.cg" "$out/$prog" "$@" > /dev/null 2>&1
done
# calls per function in the programs (see their sources)
per() { # file function calls [label]
  local n
  n=$(callgrind_annotate --inclusive=yes "$out/$1.cg" 2>/dev/null | grep -E ":$2 \[" | head -1 | awk '{gsub(",", "", $1); print $1}')
  printf '%-34s %6d instructions per call\n' "${4:-$2}" $(( ${n:-0} / $3 ))
}
per cc_small MPI_Isend 12800
per cc_small MPI_Irecv 25600
per cc_small MPI_Send 12800
per cc_small MPI_Wait 12800
per cc_small MPI_Waitall 25600
per cc_put MPI_Put 200000
per cc_put MPI_Win_flush 200000
per cc_block1 MPI_Send 100000 "MPI_Send (blocking, 1 byte)"
per cc_block1 MPI_Recv 100000 "MPI_Recv (blocking, 1 byte)"
per cc_block1 'dos::comm::Comm::send' 100000 "  of which dos::Comm::send"
per cc_block1 'dos::comm::Comm::recv' 100000 "  of which dos::Comm::recv"
per cc_block1 MPI_Allreduce 100000 "MPI_Allreduce (1 MPI_FLOAT)"
per cc_block2 MPI_Allreduce 100000 "MPI_Allreduce (2 MPI_FLOAT, 8 B)"
per cc_block2 'dos::comm::Comm::allreduce' 100000 "  of which dos::Comm::allreduce"
per cc_block256 MPI_Allreduce 100000 "MPI_Allreduce (256 MPI_FLOAT)"
per cc_bw MPI_Isend 12800 "MPI_Isend (osu_bw pattern, 8 B)"
per cc_bw MPI_Irecv 12800 "MPI_Irecv (osu_bw pattern)"
per cc_bw MPI_Waitall 25600 "MPI_Waitall, per request (osu_bw)"
per cc_bw 'dos::detached::<impl dos::comm::Comm>::isend_detached' 12800 "  dos isend_detached"
per cc_bw 'dos::detached::<impl dos::comm::Comm>::irecv_detached' 12800 "  dos irecv_detached"
