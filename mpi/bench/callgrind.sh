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
for p in cc_small cc_put; do
  "$repo/mpi/bin/dosmpicc" -O2 -o "$out/$p" "$here/$p.c"
  "$rel/dosrun" -n 1 valgrind --tool=callgrind --callgrind-out-file="$out/$p.cg" "$out/$p" > /dev/null 2>&1
done
# calls per function in the two programs (see their sources)
per() { # file function calls
  local n
  n=$(callgrind_annotate --inclusive=yes "$out/$1.cg" 2>/dev/null | grep -E ":$2 \[" | head -1 | awk '{gsub(",", "", $1); print $1}')
  printf '%-16s %6d instructions per call\n' "$2" $(( ${n:-0} / $3 ))
}
per cc_small MPI_Isend 12800
per cc_small MPI_Irecv 25600
per cc_small MPI_Send 12800
per cc_small MPI_Wait 12800
per cc_small MPI_Waitall 25600
per cc_put MPI_Put 200000
per cc_put MPI_Win_flush 200000
