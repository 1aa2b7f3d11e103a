#!/usr/bin/env bash
# The rsmpi build of dosbench (dos-bench with --features mpi: the `mpi` crate,
# whose mpi-sys finds an MPI through $MPICC's `-show`) linked against dos's
# own libmpi (mpi/, the dos-mpi crate) and run under dosrun.
#
#   ci/rsmpi.sh              debug: build, run a few benchmarks, check they
#                            complete and print results (what ci/test.sh runs)
#   ci/rsmpi.sh --compare N  release: the rsmpi dosbench on dos against the
#                            native dosbench, interleaved, N runs each (for
#                            BENCHMARKS.md; slow)
#
# The rsmpi build has its own target directory (target/rsmpi): built with the
# feature `mpi`, dosbench would otherwise replace the native one. mpi-sys
# caches what it found; it is rebuilt only when the library directory changes.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=check
runs=5
if [ "${1:-}" = --compare ]; then
  mode=compare
  runs=${2:-5}
fi
profile=debug
rel=()
if [ "$mode" = compare ]; then
  profile=release
  rel=(--release)
fi

cargo build "${rel[@]}" -p dos-mpi -p dos-launcher -p dos-bench --lib --bins
lib=$PWD/target/$profile
export MPICC=$PWD/mpi/bin/dosmpicc DOSMPICC_LIBDIR=$lib

stamp=target/rsmpi/libdir-$profile
if [ "$(cat "$stamp" 2>/dev/null)" != "$lib" ]; then
  cargo clean -p mpi-sys --target-dir target/rsmpi "${rel[@]}" >/dev/null 2>&1 || true
fi
cargo build "${rel[@]}" -p dos-bench --features mpi --target-dir target/rsmpi
mkdir -p target/rsmpi
echo "$lib" >"$stamp"

rs=target/rsmpi/$profile/dosbench
native=$lib/dosbench
dosrun=$lib/dosrun
# rsmpi passes -L and -l on, not the rpath: the library is found through this.
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ldd's output is taken whole first: `ldd | grep -q` under pipefail fails
# whenever grep exits on its match before ldd has written the rest (SIGPIPE).
deps=$(ldd "$rs")
if ! grep -qF "libmpi.so => $lib/libmpi.so" <<<"$deps"; then
  echo "rsmpi.sh: $rs does not load dos's libmpi.so:" >&2
  grep mpi <<<"$deps" >&2 || true
  exit 1
fi

if [ "$mode" = check ]; then
  fail=0
  for args in "2 latency -M 4K" "2 bw -M 4K" "2 allreduce -M 4K" "3 allreduce -M 1K" \
              "2 barrier" "2 bcast -M 1K" "2 alltoall -M 1K"; do
    set -- $args
    n=$1
    shift
    out=$(timeout 120 "$dosrun" -n "$n" "$rs" "$@" 2>&1) || {
      echo "FAIL: dosrun -n $n dosbench(rsmpi) $*: exit $?" >&2
      echo "$out" >&2
      fail=1
      continue
    }
    # The header names the MPI build; at least one row of numbers follows.
    if ! grep -q "(mpi, $n ranks)" <<<"$out" || ! grep -Eq '^[0-9]+ +[0-9.]+' <<<"$out"; then
      echo "FAIL: dosrun -n $n dosbench(rsmpi) $*: no results" >&2
      echo "$out" >&2
      fail=1
      continue
    fi
    echo "ok: dosrun -n $n dosbench(rsmpi) $* ($(grep -Ec '^[0-9]+ +[0-9.]+' <<<"$out") rows)"
  done
  exit $fail
fi

# --compare: each benchmark, native and rsmpi interleaved run by run.
out=target/rsmpi/compare
rm -rf "$out"
mkdir -p "$out"
for b in "latency -M 64K" "bw -M 1M" "allreduce -M 64K"; do
  name=${b%% *}
  for i in $(seq "$runs"); do
    # shellcheck disable=SC2086
    "$dosrun" -n 2 "$native" $b >"$out/$name.native.$i" 2>&1
    # shellcheck disable=SC2086
    "$dosrun" -n 2 "$rs" $b >"$out/$name.rsmpi.$i" 2>&1
  done
done
# Medians per size: native, rsmpi, rsmpi/native.
for name in latency bw allreduce; do
  echo "## $name (median of $runs runs; 2 ranks)"
  echo "| size | native dosbench | rsmpi dosbench on dos | rsmpi/native |"
  echo "|---:|---:|---:|---:|"
  python3 - "$out" "$name" "$runs" <<'EOF'
import sys, statistics
d, name, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rows(kind):
    per = {}
    for i in range(1, runs + 1):
        for line in open(f"{d}/{name}.{kind}.{i}"):
            f = line.split()
            if len(f) >= 2 and f[0].isdigit():
                per.setdefault(int(f[0]), []).append(float(f[1]))
    return {k: statistics.median(v) for k, v in per.items()}
a, b = rows("native"), rows("rsmpi")
for k in sorted(a):
    if k in b:
        r = b[k] / a[k] if a[k] else float("nan")
        print(f"| {k} | {a[k]:.2f} | {b[k]:.2f} | {r:.2f} |")
EOF
  echo
done
