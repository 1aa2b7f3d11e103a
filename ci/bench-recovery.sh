#!/usr/bin/env bash
# Time to recover after a failure under `dosrun --max-restarts` (issue 11),
# next to the time Open MPI's mpirun takes merely to tear a job down after a
# rank death. Prints one table (medians of TRIALS runs, and min/max).
#
# Usage:
#   ci/bench-recovery.sh [TRIALS]                 one host, and Open MPI if mpicc/mpirun exist
#   flock /tmp/dos-cluster.lock ci/bench-recovery.sh [TRIALS] --cluster
#                                                 also across the namespace hosts (root; brings
#                                                 ci/cluster.sh up 3 and down again)
#
# Binaries: target/release/{dosrun,restartcheck} if built, else target/debug
# (`cargo build --release -p dos-launcher --bin dosrun -p dos-checks --bin restartcheck`).
#
# What is measured (wall clock, the same clock on every namespace host):
# * dos, one host: `dosrun -n 4 --max-restarts 1 restartcheck DIR 30 10 kill@6:1`:
#   rank 1 records the time and SIGKILLs itself at step 6; the restarted rank 0
#   records the time right after its put of dos.ckpt.restored. Recovery = put - kill:
#   the whole job ended (every rank, the segment), a new run started, wired up,
#   read its checkpoint and resumed. dosrun's own report line ("recovered in")
#   is shown too (from dosrun's first sight of the failure).
# * dos, teardown only: the same without --max-restarts, kill to dosrun's exit.
# * dos, across hosts: 3 namespace hosts x 2 slots, 4 ranks, --spares 1; every
#   process of host 2 (agent and ranks) is SIGKILLed; kill to the put on the
#   spare's restarted run.
# * Open MPI: `mpirun -n 2` of a C program whose rank 1 records the time and
#   SIGKILLs itself while rank 0 waits in MPI_Recv: kill to mpirun's exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=${1:-10}
CLUSTER=no
[ "${2:-}" = "--cluster" ] && CLUSTER=yes

if [ -x target/release/dosrun ] && [ -x target/release/restartcheck ]; then
    BIN=$PWD/target/release
else
    BIN=$PWD/target/debug
fi
DOSRUN=$BIN/dosrun
RC=$BIN/restartcheck
[ -x "$DOSRUN" ] && [ -x "$RC" ] || { echo "build dosrun and restartcheck first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/bench-recovery.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

now_ns() { date +%s%N; }

# median, min, max of the numbers (ms) on stdin
stats() {
    sort -n | awk '{a[NR]=$1} END {
        if (NR == 0) { print "n/a"; exit }
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2;
        printf "%8.1f ms (min %.1f, max %.1f, n=%d)\n", m, a[1], a[NR], NR }'
}

ms_between() { echo "($2 - $1) / 1000000" | bc -l; }

one_host() {
    : >"$WORK/rec" ; : >"$WORK/rep" ; : >"$WORK/down"
    for t in $(seq "$TRIALS"); do
        d=$WORK/one.$t
        mkdir -p "$d"
        DOS_CKPT_ID=b$t "$DOSRUN" -n 4 --max-restarts 1 "$RC" "$d" 30 10 kill@6:1 \
            >"$d/out" 2>"$d/err" || { echo "trial $t failed:"; cat "$d/err"; exit 1; }
        k=$(cat "$d/b$t/failed_at"); p=$(cat "$d/b$t/restored_at.1")
        ms_between "$k" "$p" >>"$WORK/rec"
        sed -n 's/.*recovered in \([0-9.]*\) s.*/\1/p' "$d/err" | awk '{print $1*1000}' >>"$WORK/rep"
        # Teardown only: no restart.
        e=$WORK/down.$t
        mkdir -p "$e"
        DOS_CKPT_ID=c$t "$DOSRUN" -n 4 "$RC" "$e" 30 10 kill@6:1 >/dev/null 2>&1 || true
        end=$(now_ns)
        ms_between "$(cat "$e/c$t/failed_at")" "$end" >>"$WORK/down"
    done
    echo "dos, one host, kill -> restored put:        $(stats <"$WORK/rec")"
    echo "dos, one host, dosrun's report line:        $(stats <"$WORK/rep")"
    echo "dos, one host, kill -> dosrun exit (no restart): $(stats <"$WORK/down")"
}

ompi() {
    if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
        echo "Open MPI: mpicc/mpirun not found, skipped"
        return
    fi
    cat >"$WORK/die.c" <<'EOF'
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rank, x = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        struct timespec ts;
        usleep(200000);
        clock_gettime(CLOCK_REALTIME, &ts);
        FILE *f = fopen(argv[1], "w");
        fprintf(f, "%lld%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
        fclose(f);
        kill(getpid(), SIGKILL);
    }
    MPI_Recv(&x, 1, MPI_INT, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Finalize();
    return 0;
}
EOF
    mpicc -O2 -o "$WORK/die" "$WORK/die.c"
    : >"$WORK/ompi"
    local root=()
    [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
    for t in $(seq "$TRIALS"); do
        rm -f "$WORK/ompi.t"
        OMPI_MCA_btl=self,vader,tcp mpirun "${root[@]}" --oversubscribe -n 2 "$WORK/die" "$WORK/ompi.t" \
            >/dev/null 2>&1 || true
        end=$(now_ns)
        [ -s "$WORK/ompi.t" ] && ms_between "$(cat "$WORK/ompi.t")" "$end" >>"$WORK/ompi"
    done
    echo "Open MPI $(mpirun --version 2>&1 | head -1 | awk '{print $NF}'), mpirun -n 2, kill -> mpirun exit: $(stats <"$WORK/ompi")"
}

across() {
    [ "$CLUSTER" = yes ] || return 0
    local state=/tmp/dos-cluster
    bash ci/cluster.sh up 3 >/dev/null
    trap 'bash ci/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
    : >"$WORK/acr" ; : >"$WORK/acrep"
    for t in $(seq "$TRIALS"); do
        d=$WORK/acr.$t
        mkdir -p "$d"
        DOS_CKPT_ID=h$t "$DOSRUN" --hostfile $state/hostfile \
            --launch-agent "ssh -F $state/ssh_config -o BatchMode=yes" \
            -n 4 --max-restarts 1 --spares 1 "$RC" "$d" 40 20 >"$d/out" 2>"$d/err" &
        job=$!
        until [ -s "$d/h$t/pid.0.3" ]; do sleep 0.01; done
        sleep 0.3
        k=$(now_ns)
        for p in $(ip netns pids dos-h2); do
            case "$(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)" in
                sshd*|"") ;;
                *) kill -9 "$p" 2>/dev/null || true ;;
            esac
        done
        wait "$job" || { echo "cluster trial $t failed:"; cat "$d/err"; exit 1; }
        ms_between "$k" "$(cat "$d/h$t/restored_at.1")" >>"$WORK/acr"
        sed -n 's/.*recovered in \([0-9.]*\) s.*/\1/p' "$d/err" | awk '{print $1*1000}' >>"$WORK/acrep"
    done
    echo "dos, 3 hosts, host killed -> restored put on the spare: $(stats <"$WORK/acr")"
    echo "dos, 3 hosts, dosrun's report line:          $(stats <"$WORK/acrep")"
}

echo "binaries: $BIN; $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
one_host
ompi
across
