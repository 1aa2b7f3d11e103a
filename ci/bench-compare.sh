#!/usr/bin/env bash
# dos versus Open MPI on this machine, side by side, in one command:
#
#     ci/bench-compare.sh                 # REPS=7, full OSU size ranges, one size per job
#     QUICK=1 ci/bench-compare.sh         # sizes up to 64K, 1000 iterations
#     CLUSTER=1 ci/bench-compare.sh       # across hosts: TCP between namespace hosts (root)
#
# What it does:
#   1. installs what is missing (openmpi-bin libopenmpi-dev clang libclang-dev
#      hyperfine, with apt-get) and builds two dosbench binaries:
#        target/release/dosbench      dos   (run under target/release/dosrun)
#        target/mpi/release/dosbench  MPI   (cargo --features mpi --target-dir target/mpi)
#   2. runs every benchmark on 2 ranks, INTERLEAVED WITHIN EACH SIZE: one short
#      job per size (BAND sizes per job), dos then MPI or MPI then dos, the
#      order alternating from job to job, and the whole sweep REPS times; so
#      whatever phase the machine is in (its speed changes by 2x over minutes
#      on this VM) hits both sides of every row alike
#      (two-sided and collectives, then one-sided: put_lat get_lat put_bw atomic_lat);
#      Open MPI runs with `--mca btl self,vader --bind-to core`, dosrun with
#      `--bind-to core` when it has that option (override with DOSRUN_FLAGS);
#   3. the same for every rank count of NP (default "2"; NP="2 4" gives the
#      issue's tables with 2 and 4 ranks): latency, bw, bibw and the one-sided
#      benchmarks pair ranks 0 and 1 (the others wait in the benchmark's
#      barriers, as with OSU), the collectives run on all ranks; a count above
#      the cores runs oversubscribed (unbound; Open MPI `--oversubscribe`).
#      Without 4 in NP, allreduce of 8 bytes on 4 ranks on the 2 cores still
#      runs, as one row;
#   4. the C anchor: benches/c/pingpong.c (an OSU-style ping-pong latency and
#      window-of-64 bandwidth loop in plain C MPI), compiled with Open MPI's
#      mpicc and with dos's mpi/bin/dosmpicc (libmpi of the dos-mpi crate), run
#      interleaved per size like the rest: C path against C path, no Rust
#      binding layer on the MPI side (C_ANCHOR=0 skips it);
#   5. times job start-up of `dosbench hello` (init + finalize only), and of
#      benches/c/hello.c built for each side, on 2 and 4 ranks under dosrun
#      and under mpirun, in one hyperfine command (or a plain loop), medians;
#   6. prints one markdown report (per benchmark and size: the median over
#      REPS of each side, dos/mpi, a verdict, and each side's min-max over
#      the REPS runs) and writes it to $OUT/summary.md, ready to paste
#      into BENCHMARKS.md. Raw JSON lines stay in $OUT/{dos,mpi,c-dos,c-mpi}.jsonl.
#
# With CLUSTER=1 (as root) it compares across hosts instead: it brings up the
# test cluster (ci/cluster.sh up 3), runs latency, bw, bibw and the one-sided
# put_lat, get_lat, put_bw, atomic_lat with one rank on each of two namespace
# hosts (dosrun over its TCP transport, one-sided as active messages; Open MPI
# with `--mca btl self,tcp` and `--mca osc pt2pt`, its one-sided component
# over that BTL's messages; both unbound: each "host" runs on its own CPU (ci/cluster.sh
# gives each namespace host its own share of the 2 cores), both
# started through the hosts' sshd with the same ssh wrapper), a raw TCP
# ping-pong and stream between the same two hosts (`dosbench raw-tcp`, the
# third column), and times a 3-host x 2-rank hello job through ssh, with
# connection sharing (ssh ControlMaster, opened once beforehand) and without.
#
# A dos run that fails (for example while dos is unfinished) is reported and
# skipped; its column then shows "—". Not part of the default test path: the
# numbers depend on the machine, so nothing here can pass or fail CI.
#
# Environment: REPS (7), OUT (target/bench-compare, or target/bench-cluster
# with CLUSTER=1), QUICK (unset: sizes up to MAX_SIZE=64K, ITERS=1000),
# MAX_SIZE (largest size; default each benchmark's own, 4M or 1M), BAND (1:
# sizes per job; more makes fewer, longer jobs), ITERS (2000) and WARMUP (200)
# (dosbench's --iters/--warmup: the small-message counts; a tenth above 8K),
# NP (2: the rank counts, e.g. "2 4"), C_ANCHOR (1), CLUSTER (unset), BENCH_ARGS
# (extra dosbench options for every 2-rank run), BENCHES (all eleven, in order;
# with CLUSTER=1 the point-to-point and one-sided ones),
# DOSRUN_FLAGS, MPIRUN_FLAGS, STARTUP_RUNS (30), MPIBENCH (an rsmpi dosbench to
# use instead of building target/mpi), DOSBENCH and DOSRUN (use these
# binaries instead of building the dos variant), TRANSPORTS (with CLUSTER=1:
# dosrun's --transports between the hosts, e.g. shm,roce for the soft-RoCE, whose
# one-sided operations are RDMA WRITE/READ/atomics; default: dosrun's choice, tcp).
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-7}
if [[ -n "${CLUSTER:-}" ]]; then
    OUT=${OUT:-target/bench-cluster}
    DEFAULT_BENCHES="latency bw bibw put_lat get_lat put_bw atomic_lat"
fi
OUT=${OUT:-target/bench-compare}
STARTUP_RUNS=${STARTUP_RUNS:-30}
BAND=${BAND:-1}
C_ANCHOR=${C_ANCHOR:-1}
read -r -a BENCHES <<<"${BENCHES:-${DEFAULT_BENCHES:-latency bw bibw allreduce bcast alltoall barrier put_lat get_lat put_bw atomic_lat}}"
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
read -r -a NPS <<<"${NP:-2}"
if [[ -n "${QUICK:-}" ]]; then
    MAX_SIZE=${MAX_SIZE:-64K}
    ITERS=${ITERS:-1000}
    WARMUP=${WARMUP:-100}
fi
ITERS=${ITERS:-2000}
WARMUP=${WARMUP:-200}
MAX_SIZE=${MAX_SIZE:-}
# Shorter runs than dosbench's OSU defaults (10000 small-message
# iterations): more of them fit, interleaved, in the same time.
if [[ " ${BENCH_ARGS:-} " != *" --iters "* ]]; then
    EXTRA+=(--iters "$ITERS" --warmup "$WARMUP")
fi

# "64K" -> 65536.
bytes() {
    local v=$1
    case $v in
        *[Kk]) echo $((${v%?} << 10)) ;;
        *[Mm]) echo $((${v%?} << 20)) ;;
        *) echo $((v)) ;;
    esac
}
# The jobs of one benchmark's sweep: one line "MIN MAX" per job (BAND
# consecutive sizes of the OSU schedule: 0 for latency, then powers of two),
# or "-" for the unsized ones (barrier; atomic_lat's 8 bytes).
bands() {
    local b=$1 lo hi s sizes=()
    case $b in
        barrier | atomic_lat) echo -; return ;;
        latency | c-latency) lo=0 ;;
        allreduce) lo=8 ;;
        *) lo=1 ;;
    esac
    case $b in
        latency | bw | bibw | put_lat | get_lat | put_bw) hi=$((4 << 20)) ;;
        *) hi=$((1 << 20)) ;;
    esac
    if [[ -n $MAX_SIZE ]] && (($(bytes "$MAX_SIZE") < hi)); then
        hi=$(bytes "$MAX_SIZE")
    fi
    ((lo == 0)) && sizes+=(0)
    for ((s = lo > 1 ? lo : 1; s <= hi; s *= 2)); do sizes+=("$s"); done
    for ((s = 0; s < ${#sizes[@]}; s += BAND)); do
        local last=$((s + BAND - 1))
        ((last < ${#sizes[@]})) || last=$((${#sizes[@]} - 1))
        echo "${sizes[$s]} ${sizes[$last]}"
    done
}

log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- 1. tools ---------------------------------------------------------------
install_missing() {
    local pkgs=() p
    if have dpkg-query; then
        for p in openmpi-bin libopenmpi-dev clang libclang-dev jq; do
            [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *'ok installed'* ]] || pkgs+=("$p")
        done
    else
        have mpirun || pkgs+=(openmpi-bin)
        have mpicc || pkgs+=(libopenmpi-dev)
        have clang || pkgs+=(clang libclang-dev)
        have jq || pkgs+=(jq)
    fi
    if ((${#pkgs[@]})); then
        log "installing ${pkgs[*]}"
        local sudo=()
        ((EUID == 0)) || sudo=(sudo)
        "${sudo[@]}" apt-get update
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"
    fi
    if ! have hyperfine; then
        # Optional: a plain timing loop stands in for it.
        log "installing hyperfine (optional)"
        { ((EUID == 0)) && apt-get update && apt-get install -y --no-install-recommends hyperfine; } \
            || log "hyperfine unavailable: timing start-up with a loop"
    fi
}
install_missing
ci/deps.sh # hwloc for dosrun; sshd, iproute2 and nftables for CLUSTER=1

if ((EUID == 0)); then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

DOS_OK=1
if [[ -n "${DOSBENCH:-}" ]]; then
    log "using the given dos build: $DOSBENCH"
else
    log "building dosbench (dos) and dosrun"
    cargo build --release -p dos-bench -p dos-launcher || { DOS_OK=0; log "dos build failed: MPI only"; }
    if [[ $C_ANCHOR != 0 && -z "${CLUSTER:-}" ]]; then
        cargo build --release -p dos-mpi || { C_ANCHOR=0; log "libmpi (dos-mpi) build failed: no C anchor"; }
    fi
fi
if [[ -n "${MPIBENCH:-}" ]]; then
    log "using the given MPI build: $MPIBENCH"
else
    log "building dosbench (mpi) into target/mpi"
    cargo build --release -p dos-bench --no-default-features --features mpi --target-dir target/mpi
fi

DOSBENCH=${DOSBENCH:-$PWD/target/release/dosbench}
DOSRUN=${DOSRUN:-$PWD/target/release/dosrun}
MPIBENCH=${MPIBENCH:-$PWD/target/mpi/release/dosbench}
[[ -x $DOSBENCH && -x $DOSRUN ]] || DOS_OK=0
if [[ $C_ANCHOR != 0 && -z "${CLUSTER:-}" ]]; then
    mkdir -p "$OUT"
    # The same C source, once per MPI: C path against C path.
    if ! { mpicc -O2 -o "$OUT/pingpong-mpi" benches/c/pingpong.c &&
        mpicc -O2 -o "$OUT/hello-mpi" benches/c/hello.c &&
        DOSMPICC_LIBDIR=$PWD/target/release mpi/bin/dosmpicc -O2 -o "$OUT/pingpong-dos" benches/c/pingpong.c &&
        DOSMPICC_LIBDIR=$PWD/target/release mpi/bin/dosmpicc -O2 -o "$OUT/hello-dos" benches/c/hello.c; }; then
        C_ANCHOR=0
        log "the C anchor did not build: skipped"
    fi
fi

if [[ -z "${DOSRUN_FLAGS+x}" ]]; then
    DOSRUN_FLAGS=""
    if ((DOS_OK)) && grep -q -- '--bind-to' < <("$DOSRUN" --help 2>&1); then
        DOSRUN_FLAGS="--bind-to core"
    fi
fi
read -r -a DOSRUN_ARGS <<<"$DOSRUN_FLAGS"
read -r -a MPIRUN_ARGS <<<"${MPIRUN_FLAGS:---mca btl self,vader --bind-to core}"
# More ranks than cores: no binding, and tell Open MPI it is oversubscribed.
MPIRUN_OVER=(--mca btl self,vader --bind-to none --oversubscribe)
DOSRUN_OVER=()
if ((DOS_OK)) && grep -q -- '--bind-to' < <("$DOSRUN" --help 2>&1); then
    DOSRUN_OVER=(--bind-to none)
fi

mkdir -p "$OUT"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    log "warning: load average is $LOAD_START: something else is running, numbers will be noisy"
fi
: >"$OUT/dos.jsonl"
: >"$OUT/mpi.jsonl"
: >"$OUT/c-dos.jsonl"
: >"$OUT/c-mpi.jsonl"
: >"$OUT/failures.txt"

# The program each side runs: dosbench (PROG=bench: adds --json), or the C
# anchor (PROG=c: prints JSON itself; its output goes to c-*.jsonl).
PROG=bench
run_dos() { # ranks launcher-args... -- program-args...
    local n=$1; shift
    local largs=()
    while [[ $1 != -- ]]; do largs+=("$1"); shift; done
    shift
    ((DOS_OK)) || return 0
    local cmd=("$DOSBENCH" "$@" --json) out=$OUT/dos.jsonl
    [[ $PROG == c ]] && cmd=("$OUT/pingpong-dos" --impl dos "$@") out=$OUT/c-dos.jsonl
    if ! timeout 900 "$DOSRUN" -n "$n" "${largs[@]}" "${cmd[@]}" </dev/null >>"$out" 2>>"$OUT/dos.err"; then
        echo "dos ($PROG) -n $n $*" >>"$OUT/failures.txt"
        log "dos run failed: -n $n $* (see $OUT/dos.err)"
    fi
}
run_mpi() {
    local n=$1; shift
    local largs=()
    while [[ $1 != -- ]]; do largs+=("$1"); shift; done
    shift
    local cmd=("$MPIBENCH" "$@" --json) out=$OUT/mpi.jsonl
    [[ $PROG == c ]] && cmd=("$OUT/pingpong-mpi" --impl mpi "$@") out=$OUT/c-mpi.jsonl
    if ! timeout 900 mpirun -n "$n" "${largs[@]}" "${cmd[@]}" </dev/null >>"$out" 2>>"$OUT/mpi.err"; then
        echo "mpi ($PROG) -n $n $*" >>"$OUT/failures.txt"
        log "mpi run failed: -n $n $* (see $OUT/mpi.err)"
    fi
}
pair() { # turn ranks dos-launcher-args(string) mpi-launcher-args(string) program-args...
    local turn=$1 n=$2 dl=$3 ml=$4; shift 4
    local -a d m
    read -r -a d <<<"$dl"
    read -r -a m <<<"$ml"
    if ((turn % 2)); then
        run_dos "$n" "${d[@]}" -- "$@"
        run_mpi "$n" "${m[@]}" -- "$@"
    else
        run_mpi "$n" "${m[@]}" -- "$@"
        run_dos "$n" "${d[@]}" -- "$@"
    fi
}
TURN=0
# One benchmark's sweep, one pair of jobs per band of sizes, which side goes
# first alternating from pair to pair.
sweep() { # ranks dos-args mpi-args bench-name program-args...
    local n=$1 dl=$2 ml=$3 b=$4 lo hi; shift 4
    local -a range
    # The bands come on descriptor 3: the launchers read (and would eat) stdin.
    while read -r -u 3 lo hi; do
        range=()
        [[ $lo == - ]] || range=(--min-size "$lo" --max-size "$hi")
        TURN=$((TURN + 1))
        pair "$TURN" "$n" "$dl" "$ml" "$@" "${range[@]}"
    done 3< <(bands "$b")
}

if [[ -n "${CLUSTER:-}" ]]; then
    # ---- across hosts ----------------------------------------------------------
    ((EUID == 0)) || { log "CLUSTER=1 needs root (network namespaces)"; exit 2; }
    STATE=/tmp/dos-cluster
    ci/cluster.sh up 3 >&2
    trap 'ci/cluster.sh down >&2 || true' EXIT
    H1=198.18.0.1 H2=198.18.0.2
    # One ssh wrapper for both launchers. ssh-shared: connection sharing, the
    # masters opened right here; ssh-plain: a new connection every time.
    SSHW=$PWD/$OUT/ssh-shared
    SSHP=$PWD/$OUT/ssh-plain
    printf '#!/bin/sh\nexec ssh -F %s -o ControlMaster=auto -o ControlPath=%s/cm-%%h -o ControlPersist=600 "$@"\n' \
        "$STATE/ssh_config" "$STATE" >"$SSHW"
    printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$STATE/ssh_config" >"$SSHP"
    chmod +x "$SSHW" "$SSHP"
    for h in 1 2 3; do "$SSHW" "198.18.0.$h" true; done
    MPI_TCP="--bind-to none --mca btl self,tcp --mca btl_tcp_if_include 198.18.0.0/24 --mca oob_tcp_if_include 198.18.0.0/24"
    D2="--bind-to none -H $H1:1,$H2:1 --launch-agent $SSHW${TRANSPORTS:+ --transports $TRANSPORTS}"
    # One-sided over the TCP BTL with osc pt2pt, named explicitly: osc sm needs
    # one node, osc rdma over btl/tcp emulates RDMA with active messages and has
    # had wrong-answer bugs in 4.1 (open-mpi/ompi#8983), and Debian's
    # openmpi-mca-params.conf excludes pt2pt (and ucx) by default.
    M2="-H $H1,$H2 $MPI_TCP --mca osc pt2pt --mca plm_rsh_agent $SSHW"
    : >"$OUT/raw.jsonl"
    PORT=47000
    for ((rep = 1; rep <= REPS; rep++)); do
        for b in "${BENCHES[@]}"; do
            log "rep $rep/$REPS: $b across two hosts"
            sweep 2 "$D2" "$M2" "$b" "$b" "${EXTRA[@]}"
        done
        log "rep $rep/$REPS: raw TCP between the same hosts"
        PORT=$((PORT + 1))
        ip netns exec dos-h1 timeout 900 "$DOSBENCH" raw-tcp serve "$H1:$PORT" 2>>"$OUT/raw.err" &
        srv=$!
        ip netns exec dos-h2 timeout 900 "$DOSBENCH" raw-tcp "$H1:$PORT" "${EXTRA[@]}" --json \
            >>"$OUT/raw.jsonl" 2>>"$OUT/raw.err" || echo "raw-tcp $H1:$PORT" >>"$OUT/failures.txt"
        wait "$srv" || true
    done

    # ---- job start-up across 3 hosts x 2 ranks --------------------------------
    startup_md=$OUT/startup.md
    HF=$STATE/hostfile
    log "job start-up: hello on 3 hosts x 2 ranks, through ssh"
    if have hyperfine; then
        hyperfine --style basic --warmup 2 --runs "$STARTUP_RUNS" --ignore-failure \
            --export-markdown "$startup_md" \
            "$DOSRUN -n 6 --bind-to none --hostfile $HF --launch-agent $SSHW $DOSBENCH hello" \
            "mpirun -n 6 --hostfile $HF $MPI_TCP --mca plm_rsh_agent $SSHW $MPIBENCH hello" \
            "$DOSRUN -n 6 --bind-to none --hostfile $HF --launch-agent $SSHP $DOSBENCH hello" \
            "mpirun -n 6 --hostfile $HF $MPI_TCP --mca plm_rsh_agent $SSHP $MPIBENCH hello" >&2
    else
        echo "(hyperfine missing: no start-up timing)" >"$startup_md"
    fi
    STARTUP_TITLE="Job start-up, \`dosbench hello\` on 3 hosts x 2 ranks through ssh (ssh-shared: ControlMaster connections opened beforehand; ssh-plain: a new ssh connection per host and job):"
else
# ---- 2, 3 and 4. interleaved benchmark runs -----------------------------------
for ((rep = 1; rep <= REPS; rep++)); do
    PROG=bench
    for n in "${NPS[@]}"; do
        # More ranks than cores: unbound and oversubscribed on both sides.
        if ((n <= $(nproc))); then dl=${DOSRUN_ARGS[*]} ml=${MPIRUN_ARGS[*]}; else dl=${DOSRUN_OVER[*]} ml=${MPIRUN_OVER[*]}; fi
        for b in "${BENCHES[@]}"; do
            log "rep $rep/$REPS: $b on $n ranks"
            sweep "$n" "$dl" "$ml" "$b" "$b" "${EXTRA[@]}"
        done
    done
    if [[ " ${NPS[*]} " != *" 4 "* ]]; then
        log "rep $rep/$REPS: allreduce 8 B on 4 ranks (oversubscribed)"
        TURN=$((TURN + 1))
        pair "$TURN" 4 "${DOSRUN_OVER[*]}" "${MPIRUN_OVER[*]}" allreduce --min-size 8 --max-size 8 --iters 2000 --warmup 200
    fi
    if [[ $C_ANCHOR != 0 ]]; then
        PROG=c
        log "rep $rep/$REPS: C anchor, latency and bw"
        sweep 2 "${DOSRUN_ARGS[*]}" "${MPIRUN_ARGS[*]}" c-latency --only latency --iters "$ITERS" --warmup "$WARMUP"
        sweep 2 "${DOSRUN_ARGS[*]}" "${MPIRUN_ARGS[*]}" bw --only bw --iters "$ITERS" --warmup "$WARMUP"
    fi
done

# ---- 5. job start-up ------------------------------------------------------------
startup_md=$OUT/startup.md
cmds=()
for n in 2 4; do
    if ((n <= $(nproc))); then dl=("${DOSRUN_ARGS[@]}") ml=("${MPIRUN_ARGS[@]}"); else dl=("${DOSRUN_OVER[@]}") ml=("${MPIRUN_OVER[@]}"); fi
    ((DOS_OK)) && cmds+=("$DOSRUN -n $n ${dl[*]} $DOSBENCH hello")
    cmds+=("mpirun -n $n ${ml[*]} $MPIBENCH hello")
    # The same C MPI_Init/MPI_Finalize program under both (benches/c/hello.c).
    if [[ $C_ANCHOR != 0 ]]; then
        ((DOS_OK)) && cmds+=("$DOSRUN -n $n ${dl[*]} $OUT/hello-dos")
        cmds+=("mpirun -n $n ${ml[*]} $OUT/hello-mpi")
    fi
done
log "job start-up: hello on 2 and 4 ranks"
if have hyperfine && have jq; then
    # -N: no shell between hyperfine and the launcher (a shell costs ~1 ms).
    hyperfine -N --style basic --warmup 3 --runs "$STARTUP_RUNS" --ignore-failure \
        --export-json "$OUT/startup.json" "${cmds[@]}" >&2
    {
        echo "| Command | Median [ms] | Min [ms] | Max [ms] | Mean [ms] | Runs |"
        echo "|:---|---:|---:|---:|---:|---:|"
        jq -r '.results[] | "| `\(.command)` | \(.median * 1000 * 10 | round / 10) | \(.min * 1000 * 10 | round / 10) | \(.max * 1000 * 10 | round / 10) | \(.mean * 1000 * 10 | round / 10) | \(.times | length) |"' "$OUT/startup.json"
    } >"$startup_md"
else
    {
        echo "| Command | Median [ms] | Min [ms] | Max [ms] | Mean [ms] | Runs |"
        echo "|:---|---:|---:|---:|---:|---:|"
        for c in "${cmds[@]}"; do
            for ((i = 0; i < STARTUP_RUNS; i++)); do
                t0=$(date +%s%N)
                $c >/dev/null 2>&1 || true
                t1=$(date +%s%N)
                echo $(((t1 - t0) / 1000))
            done | sort -n | awk -v c="\`$c\`" '{v[NR]=$1; s+=$1}
                END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2;
                     printf "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", c, m/1000, v[1]/1000, v[NR]/1000, s/NR/1000, NR}'
        done
    } >"$startup_md"
fi
STARTUP_TITLE="Job start-up, \`dosbench hello\` and benches/c/hello.c (init + finalize) on 2 and 4 ranks ($STARTUP_RUNS runs each, one hyperfine command):"
fi

# ---- 5. report -------------------------------------------------------------------
CMP=$MPIBENCH
((DOS_OK)) && CMP=$DOSBENCH
summary=$OUT/summary.md
{
    echo "### dos vs Open MPI: $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -r)."
    if [[ -n "${CLUSTER:-}" ]]; then
        echo "Across two namespace hosts of \`ci/cluster.sh\` (veth + bridge), one rank each. MPI: $(mpirun --version 2>/dev/null | head -1), \`$M2\`; dosrun: \`$D2\`; raw: \`dosbench raw-tcp\` (spinning ping-pong, blocking stream)."
    else
        echo "MPI: $(mpirun --version 2>/dev/null | head -1), \`${MPIRUN_ARGS[*]}\`; dosrun: \`${DOSRUN_ARGS[*]:-(defaults)}\`."
    fi
    echo "Load average (1, 5, 15 min) before: $LOAD_START; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Medians and min-max over $REPS repetitions, dos and MPI alternating within each size (${BAND} size(s) per job; \`${EXTRA[*]}\`${MAX_SIZE:+, sizes up to $MAX_SIZE}; ranks: ${NPS[*]}, above $(nproc) unbound and oversubscribed: dosrun \`${DOSRUN_OVER[*]}\`, mpirun \`${MPIRUN_OVER[*]}\`)."
    echo "dos/mpi below 1 is better for dos in us, above 1 in MB/s; \"even\" is within ±5%."
    echo
    "$CMP" compare "$OUT/dos.jsonl" "$OUT/mpi.jsonl" ${CLUSTER:+"$OUT/raw.jsonl"}
    if [[ -z "${CLUSTER:-}" && $C_ANCHOR != 0 && -s $OUT/c-mpi.jsonl ]]; then
        echo
        echo "C anchor: benches/c/pingpong.c, the same C source built with mpicc (mpi) and with dosmpicc (dos, libmpi of dos-mpi):"
        echo
        "$CMP" compare "$OUT/c-dos.jsonl" "$OUT/c-mpi.jsonl"
    fi
    echo
    echo "$STARTUP_TITLE"
    echo
    cat "$startup_md"
    if ((!DOS_OK)); then
        echo
        echo "dos was not built or dosrun is missing: only MPI ran (dos columns are empty)."
    fi
    if [[ -s $OUT/failures.txt ]]; then
        echo
        echo "Failed runs (no numbers; errors in $OUT/{dos,mpi}.err):"
        sort "$OUT/failures.txt" | uniq -c | sed 's/^ *\([0-9]*\) \(.*\)/- `\2` (×\1)/'
    fi
} >"$summary"
cat "$summary"
