#!/usr/bin/env bash
# Parallel file I/O, side by side in one command: `dosbench io` through
# dos::io on dosfs (independent and collective), the same program through
# Open MPI's MPI-IO on the local ext4, and fio on the raw target directory.
#
#     ci/bench-io.sh                 # REPS=5 interleaved rounds, 2 ranks, 3 local servers
#     REPS=3 BLOCK=32M ci/bench-io.sh
#     CLUSTER=1 ci/bench-io.sh       # then also across the 3 namespace hosts (root)
#
# What it does:
#   1. builds (unless DOSBENCH/DOSRUN/DOSFS_BIN/MPIBENCH name binaries):
#        target/release/{dosbench,dosrun,dosfs}   (cargo build --release)
#        target/mpi/release/dosbench              (--features mpi --target-dir target/mpi)
#      and installs Open MPI and fio with apt-get if they are missing;
#   2. starts SERVERS dosfs servers on this host (`dosfs up --local`) over
#      $DIR/t, on the same disk as the MPI files ($DIR/mpi) and fio's ($DIR/fio);
#   3. runs REPS rounds; each round runs, in an order rotated per round:
#        dos  independent   dosrun -n RANKS dosbench io             (write+sync, cold read)
#        dos  collective    ... --collective
#        mpi  independent   mpirun -n RANKS dosbench(mpi) io --path $DIR/mpi
#        mpi  collective    ... --collective
#        fio  write/read, 1 MiB, O_DIRECT, libaio, QD1 and QD16, RANKS*BLOCK bytes,
#             writes with --end_fsync=1
#      Every dosbench run is one repetition (`--reps 1`) with the page cache
#      dropped between its write and its read (`--drop-caches`, as root; the
#      reads are then warm and the table says so);
#   4. prints a markdown table: per row the median over the rounds and the
#      spread (min-max), then the ratios the issue sets targets for; it is
#      written to $OUT/summary.md, raw lines to $OUT/raw.tsv;
#   5. with CLUSTER=1, under `flock /tmp/dos-cluster.lock` (the cluster is one
#      global resource): brings up the 3 namespace hosts (ci/cluster.sh up 3),
#      starts dosfs on the first 1, 2 and 3 of them (`dosfs up --hostfile`,
#      through ssh, targets in $DIR/c1..c3), and runs REPS interleaved rounds
#      of `dosbench io --collective` with 3 ranks, one per host, against each
#      (the scaling with the number of servers; the hosts share this machine's
#      disk and 2 cores), with DOSBENCH_BASE also the base client against the
#      3 servers in the same rounds, then takes it all down; the table is appended.
#
# Environment: REPS (5), RANKS (2), BLOCK (64M per rank), TRANSFER (1M),
# SERVERS (3), DIR (/tmp/dos-bench-io: must be on the disk to measure; wiped),
# OUT (target/bench-io), ONLY_CLUSTER (with CLUSTER=1: skip this host's rounds), DOSBENCH, DOSRUN, DOSFS_BIN, MPIBENCH (use these
# binaries), DOSFS_BASE (another dosfs binary, e.g. an older commit's, its
# file name ending in dosfs: its servers get rows of their own in the same rounds),
# DOSBENCH_BASE (another dosbench, e.g. an older commit's: it gets the "base" rows,
# against the DOSFS_BASE servers if given, else the same servers; a client-side
# before/after in one run), ROWS (only these rows, e.g. "dos-coll base-coll
# fio-qd16": dos-ind dos-coll base-ind base-coll wb-ind wb-coll mpi-ind mpi-coll fio-qd1 fio-qd16;
# wb-*: the rows run with DOS_FS_WRITE_BEHIND=$WB, default 8, only when named);
# without mpi rows MPIBENCH is not built).
# Not part of the test path: numbers depend on the machine and its load.
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-5}
RANKS=${RANKS:-2}
BLOCK=${BLOCK:-64M}
TRANSFER=${TRANSFER:-1M}
SERVERS=${SERVERS:-3}
WB=${WB:-8}
DIR=${DIR:-/tmp/dos-bench-io}
OUT=${OUT:-target/bench-io}

log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- 1. tools and binaries --------------------------------------------------
pkgs=()
have mpirun || pkgs+=(openmpi-bin)
have mpicc || pkgs+=(libopenmpi-dev)
have fio || pkgs+=(fio)
[[ -n "${MPIBENCH:-}" ]] || have clang || pkgs+=(clang libclang-dev)
if ((${#pkgs[@]})); then
    log "installing ${pkgs[*]}"
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"
fi
if ((EUID == 0)); then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
if [[ -z "${DOSBENCH:-}" || -z "${DOSRUN:-}" || -z "${DOSFS_BIN:-}" ]]; then
    log "building dosbench, dosrun and dosfs (release)"
    cargo build --release -p dos-bench -p dos-launcher -p dos-fs
fi
if [[ -z "${MPIBENCH:-}" && "${ROWS:-mpi}" == *mpi* ]]; then
    log "building dosbench (mpi) into target/mpi"
    cargo build --release -p dos-bench --no-default-features --features mpi --target-dir target/mpi
fi
DOSBENCH=${DOSBENCH:-$PWD/target/release/dosbench}
DOSRUN=${DOSRUN:-$PWD/target/release/dosrun}
DOSFS_BIN=${DOSFS_BIN:-$PWD/target/release/dosfs}
MPIBENCH=${MPIBENCH:-$PWD/target/mpi/release/dosbench}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DROP=()
COLD="cold (page cache dropped)"
if ((EUID == 0)) && [[ -w /proc/sys/vm/drop_caches ]]; then
    DROP=(--drop-caches)
else
    COLD="warm (not root: page cache kept)"
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 2. servers -------------------------------------------------------------
if [[ -n "${DOSFS_BASE:-}" && "$DOSFS_BASE" != *dosfs ]]; then
    # `dosfs down` stops only processes whose program name ends in dosfs.
    echo "DOSFS_BASE must name a file called ...dosfs (it is $DOSFS_BASE)" >&2
    exit 2
fi
# Servers a previous run left (killed before its own `down`) go first.
for a in "$DIR/fs.addr" "$DIR/base.addr"; do
    [[ ! -f $a ]] || "$DOSFS_BIN" --fs "$a" down >/dev/null 2>&1 || true
done
rm -rf "$DIR"
mkdir -p "$DIR/mpi" "$DIR/fio"
ADDR=$DIR/fs.addr
BASE_ADDR=$DIR/base.addr
stop() {
    "$DOSFS_BIN" --fs "$ADDR" down >/dev/null 2>&1 || true
    [[ -z "${DOSFS_BASE:-}" ]] || "$DOSFS_BASE" --fs "$BASE_ADDR" down >/dev/null 2>&1 || true
}
trap stop EXIT
log "starting $SERVERS dosfs servers over $DIR/t"
"$DOSFS_BIN" --fs "$ADDR" up --local "$SERVERS" --target "$DIR/t" >/dev/null
if [[ -n "${DOSFS_BASE:-}" ]]; then
    log "starting $SERVERS dosfs servers of $DOSFS_BASE over $DIR/base"
    "$DOSFS_BASE" --fs "$BASE_ADDR" up --local "$SERVERS" --target "$DIR/base" >/dev/null
fi
export DOSFS="$ADDR"
BASE_BENCH=${DOSBENCH_BASE:-$DOSBENCH}
BASE_FS=$ADDR
[[ -z "${DOSFS_BASE:-}" ]] || BASE_FS=$BASE_ADDR

# ---- 3. rounds --------------------------------------------------------------
RAW=$OUT/raw.tsv
: >"$RAW"
IO_ARGS=(io --block-size "$BLOCK" --transfer-size "$TRANSFER" --reps 1 "${DROP[@]}" --json)

# One dosbench JSON line -> "write read" (MiB/s).
wr() { python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(j["write"], j["read"])'; }

run_one() { # name
    local name=$1 line
    case $name in
    dos-ind) line=$("$DOSRUN" -n "$RANKS" "$DOSBENCH" "${IO_ARGS[@]}" | wr) ;;
    dos-coll) line=$("$DOSRUN" -n "$RANKS" "$DOSBENCH" "${IO_ARGS[@]}" --collective | wr) ;;
    base-ind) line=$(DOSFS=$BASE_FS "$DOSRUN" -n "$RANKS" "$BASE_BENCH" "${IO_ARGS[@]}" | wr) ;;
    base-coll) line=$(DOSFS=$BASE_FS "$DOSRUN" -n "$RANKS" "$BASE_BENCH" "${IO_ARGS[@]}" --collective | wr) ;;
    wb-ind) line=$(DOS_FS_WRITE_BEHIND=$WB "$DOSRUN" -n "$RANKS" "$DOSBENCH" "${IO_ARGS[@]}" | wr) ;;
    wb-coll) line=$(DOS_FS_WRITE_BEHIND=$WB "$DOSRUN" -n "$RANKS" "$DOSBENCH" "${IO_ARGS[@]}" --collective | wr) ;;
    mpi-ind)
        line=$(mpirun --oversubscribe --mca btl self,vader -n "$RANKS" \
            "$MPIBENCH" "${IO_ARGS[@]}" --path "$DIR/mpi" | wr)
        ;;
    mpi-coll)
        line=$(mpirun --oversubscribe --mca btl self,vader -n "$RANKS" \
            "$MPIBENCH" "${IO_ARGS[@]}" --path "$DIR/mpi" --collective | wr)
        ;;
    fio-qd1 | fio-qd16)
        local qd=${name#fio-qd} w r
        local common=(--name=f --directory="$DIR/fio" --bs=1M --size=$((RANKS * $(numfmt --from=iec "$BLOCK")))
            --direct=1 --ioengine=libaio --iodepth="$qd" --output-format=terse --terse-version=3)
        w=$(fio "${common[@]}" --rw=write --end_fsync=1 | awk -F';' '{print $48 / 1024}')
        ((${#DROP[@]})) && { sync; echo 3 >/proc/sys/vm/drop_caches; }
        r=$(fio "${common[@]}" --rw=read | awk -F';' '{print $7 / 1024}')
        rm -f "$DIR"/fio/*
        line="$w $r"
        ;;
    esac
    printf '%s\t%s\n' "$name" "${line// /$'\t'}" >>"$RAW"
}

NAMES=(dos-ind dos-coll mpi-ind mpi-coll fio-qd1 fio-qd16)
[[ -z "${DOSFS_BASE:-}${DOSBENCH_BASE:-}" ]] || NAMES+=(base-ind base-coll)
# ROWS="dos-coll base-coll fio-qd16" (names as above): only these rows.
[[ -z "${ROWS:-}" ]] || read -r -a NAMES <<<"$ROWS"
# ONLY_CLUSTER=1 (with CLUSTER=1): skip the rounds on this host.
[[ -z "${ONLY_CLUSTER:-}" ]] || NAMES=()
for ((round = 0; round < REPS && ${#NAMES[@]}; round++)); do
    log "round $((round + 1)) of $REPS"
    for ((k = 0; k < ${#NAMES[@]}; k++)); do
        name=${NAMES[$(((k + round) % ${#NAMES[@]}))]}
        run_one "$name" || log "$name failed in round $((round + 1))"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 4. table ---------------------------------------------------------------
python3 - "$RAW" "$RANKS" "$BLOCK" "$TRANSFER" "$SERVERS" "$REPS" "$COLD" "$LOAD_START" "$LOAD_END" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" "$WB" >"$OUT/summary.md" <<'EOF'
import statistics, sys
raw, ranks, block, transfer, servers, reps, cold, l0, l1, commit, wb = sys.argv[1:]
rows = {}
for line in open(raw):
    name, w, r = line.split("\t")
    rows.setdefault(name, ([], []))
    rows[name][0].append(float(w))
    rows[name][1].append(float(r))
label = {
    "dos-ind": "dos::io, independent (write_at/read_at)",
    "dos-coll": "dos::io, collective (write_at_all/read_at_all)",
    "base-ind": "dos::io, independent, base (DOSFS_BASE / DOSBENCH_BASE)",
    "base-coll": "dos::io, collective, base (DOSFS_BASE / DOSBENCH_BASE)",
    "wb-ind": f"dos::io, independent, DOS_FS_WRITE_BEHIND={wb}",
    "wb-coll": f"dos::io, collective, DOS_FS_WRITE_BEHIND={wb}",
    "mpi-ind": "Open MPI MPI-IO, independent",
    "mpi-coll": "Open MPI MPI-IO, collective",
    "fio-qd1": "fio O_DIRECT QD1 (libaio, 1 MiB)",
    "fio-qd16": "fio O_DIRECT QD16 (libaio, 1 MiB)",
}
def med(v):
    return statistics.median(v) if v else float("nan")
def cell(v):
    return f"{med(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "—"
print(f"`ci/bench-io.sh` at {commit}: {ranks} ranks, {block} per rank in {transfer} transfers, "
      f"one shared file (segmented), dosfs with {servers} local servers; {reps} interleaved rounds; "
      f"load average {l0} at start, {l1} at end. MiB/s, median (min-max); reads {cold}.")
print()
print("| Run | write+sync | read |")
print("|---|---:|---:|")
for k, v in label.items():
    if k in rows:
        print(f"| {v} | {cell(rows[k][0])} | {cell(rows[k][1])} |")
print()
def ratio(a, ia, b, ib):
    if a in rows and b in rows:
        x, y = med(rows[a][ia]), med(rows[b][ib])
        return f"{x / y:.2f}" if y else "—"
    return "—"
print("| Target (issue 10) | ratio of medians | goal |")
print("|---|---:|---:|")
print(f"| dos collective write+sync / MPI-IO collective | {ratio('dos-coll', 0, 'mpi-coll', 0)} | >= 1.5 |")
print(f"| dos collective write+sync / fio QD16 write | {ratio('dos-coll', 0, 'fio-qd16', 0)} | >= 0.8 |")
print(f"| dos collective read / fio QD16 read | {ratio('dos-coll', 1, 'fio-qd16', 1)} | >= 0.8 |")
print(f"| dos independent read / fio QD1 read | {ratio('dos-ind', 1, 'fio-qd1', 1)} | >= 0.8 |")
if "base-coll" in rows:
    print(f"| base collective write+sync / MPI-IO collective | {ratio('base-coll', 0, 'mpi-coll', 0)} | (before) |")
    print(f"| base collective write+sync / fio QD16 write | {ratio('base-coll', 0, 'fio-qd16', 0)} | (before) |")
    print(f"| base collective read / fio QD16 read | {ratio('base-coll', 1, 'fio-qd16', 1)} | (before) |")
    print(f"| dos collective / base collective, write+sync | {ratio('dos-coll', 0, 'base-coll', 0)} | (after / before) |")
    print(f"| dos collective / base collective, read | {ratio('dos-coll', 1, 'base-coll', 1)} | (after / before) |")
if "base-ind" in rows:
    print(f"| dos independent / base independent, write+sync | {ratio('dos-ind', 0, 'base-ind', 0)} | (after / before) |")
    print(f"| dos independent / base independent, read | {ratio('dos-ind', 1, 'base-ind', 1)} | (after / before) |")
EOF

# ---- 5. across the namespace hosts --------------------------------------------
cluster() {
    local state=${DOS_CLUSTER_DIR:-/tmp/dos-cluster} n round k name line
    local launch="ssh -F $state/ssh_config -o BatchMode=yes"
    ci/cluster.sh up 3 >&2
    for n in 1 2 3; do
        head -n "$n" "$state/hostfile" >"$DIR/hosts$n"
        "$DOSFS_BIN" --fs "$DIR/c$n.addr" up --hostfile "$DIR/hosts$n" --launch-agent "$launch" \
            --target "$DIR/c$n" >&2
    done
    : >"$OUT/cluster.tsv"
    for ((round = 0; round < REPS; round++)); do
        log "cluster round $((round + 1)) of $REPS"
        for ((k = 0; k < 3; k++)); do
            n=$(((k + round) % 3 + 1))
            line=$(DOSFS="$DIR/c$n.addr" "$DOSRUN" --hostfile "$state/hostfile" --launch-agent "$launch" \
                -x DOSFS -n 3 --npernode 1 "$DOSBENCH" "${IO_ARGS[@]}" --collective | wr) \
                || { log "cluster run with $n servers failed"; continue; }
            printf 'servers-%s\t%s\n' "$n" "${line// /$'\t'}" >>"$OUT/cluster.tsv"
        done
        # With DOSBENCH_BASE: the base client against the 3 servers too.
        if [[ -n "${CLUSTER_BASE:-}" ]]; then
            line=$(DOSFS="$DIR/c3.addr" "$DOSRUN" --hostfile "$state/hostfile" --launch-agent "$launch" \
                -x DOSFS -n 3 --npernode 1 "$CLUSTER_BASE" "${IO_ARGS[@]}" --collective | wr) \
                || { log "cluster run of the base with 3 servers failed"; continue; }
            printf 'base-3\t%s\n' "${line// /$'\t'}" >>"$OUT/cluster.tsv"
        fi
    done
    for n in 1 2 3; do
        "$DOSFS_BIN" --fs "$DIR/c$n.addr" down >&2 || true
    done
    ci/cluster.sh down >&2
    python3 - "$OUT/cluster.tsv" "$REPS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, w, r = line.split("\t")
    rows.setdefault(name, ([], []))
    rows[name][0].append(float(w))
    rows[name][1].append(float(r))
def cell(v):
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "—"
print()
print(f"Across the 3 namespace hosts: 3 ranks (one per host), collective, {sys.argv[2]} interleaved rounds:")
print()
print("| dosfs servers | write+sync | read |")
print("|---:|---:|---:|")
for n in (1, 2, 3):
    w, r = rows.get(f"servers-{n}", ([], []))
    print(f"| {n} | {cell(w)} | {cell(r)} |")
if "base-3" in rows:
    w, r = rows["base-3"]
    print(f"| 3, base client (DOSBENCH_BASE) | {cell(w)} | {cell(r)} |")
PY
}
if [[ -n "${CLUSTER:-}" ]]; then
    export -f cluster log wr
    export DIR OUT REPS DOSFS_BIN DOSRUN DOSBENCH
    export CLUSTER_BASE=${DOSBENCH_BASE:-}
    export IO_ARGS_STR="${IO_ARGS[*]}"
    # shellcheck disable=SC2016
    flock -w 900 /tmp/dos-cluster.lock bash -c 'read -r -a IO_ARGS <<<"$IO_ARGS_STR"; cluster' >>"$OUT/summary.md" \
        || log "the cluster run failed"
fi
cat "$OUT/summary.md"
