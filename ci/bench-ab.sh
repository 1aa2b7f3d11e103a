#!/usr/bin/env bash
# Two builds of dos side by side: the same dosbench rows, runs of A and B
# interleaved on the same machine, medians and the B/A ratio per row
# (latency rows in us: lower is better; bw rows in MB/s: higher is better).
#
#   ci/bench-ab.sh A_DIR B_DIR [RUNS]
#
# A_DIR and B_DIR each hold a `dosrun` and a `dosbench` (release builds; e.g. a
# copy of target/release before a change, and target/release after it).
# Rows: 2-rank latency 8 B and 64 KiB and bw 8 B and 1 MiB over shm and over tcp
# (DOS_TRANSPORTS=tcp) and over the soft-RoCE (DOS_TRANSPORTS=roce), allreduce 8 B and 64 KiB on 2 and on 4 ranks
# (oversubscribed: exercises blocking and waking). RUNS (default 7) per build.
set -euo pipefail
A=${1:?A_DIR}; B=${2:?B_DIR}; RUNS=${3:-7}
out=$(mktemp -d)
row() { # name env ranks bench sizes...
    local name=$1 envs=$2 n=$3 bench=$4 min=$5 max=$6
    for ((i = 0; i < RUNS; i++)); do
        for side in A B; do
            local d; [ $side = A ] && d=$A || d=$B
            env $envs timeout 120 "$d/dosrun" -n "$n" "$d/dosbench" "$bench" \
                --min-size "$min" --max-size "$max" --json 2>/dev/null |
                python3 -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if not l.startswith("{"): continue
    for r in json.loads(l)["rows"]:
        if r["size"] in ('"$min,$max"'): print(r["size"], r["avg"])' >>"$out/$name.$side" || true
        done
    done
}
row lat_shm "DOS_X=1" 2 latency 8 65536
row lat_tcp "DOS_TRANSPORTS=tcp" 2 latency 8 65536
row bw_shm "DOS_X=1" 2 bw 8 1048576
row bw_tcp "DOS_TRANSPORTS=tcp" 2 bw 8 1048576
row lat_roce "DOS_TRANSPORTS=roce" 2 latency 8 65536
row bw_roce "DOS_TRANSPORTS=roce" 2 bw 8 1048576
row allreduce2 "DOS_X=1" 2 allreduce 8 65536
row allreduce4 "DOS_X=1" 4 allreduce 8 65536
python3 - "$out" <<'PY'
import sys, os, statistics, collections
d = sys.argv[1]
names = sorted({f.rsplit('.', 1)[0] for f in os.listdir(d)})
print(f"{'row':<12} {'size':>8} {'A median':>10} {'B median':>10} {'B/A':>6}")
for n in names:
    vals = {}
    for side in 'AB':
        m = collections.defaultdict(list)
        p = os.path.join(d, f"{n}.{side}")
        if os.path.exists(p):
            for line in open(p):
                s, v = line.split(); m[int(s)].append(float(v))
        vals[side] = m
    for s in sorted(set(vals['A']) | set(vals['B'])):
        a = statistics.median(vals['A'][s]) if vals['A'][s] else float('nan')
        b = statistics.median(vals['B'][s]) if vals['B'][s] else float('nan')
        print(f"{n:<12} {s:>8} {a:>10.3f} {b:>10.3f} {b/a:>6.2f}")
PY
rm -rf "$out"
