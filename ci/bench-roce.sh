#!/usr/bin/env bash
# The soft-RoCE against a raw UDP baseline and against dos's TCP transport,
# between two namespace hosts of ci/cluster.sh (jumbo frames: RoCE MTU 4096),
# interleaved, medians over REPS runs (as root):
#
#     ci/bench-roce.sh              # REPS=5
#     REPS=9 ci/bench-roce.sh
#
# Each rep runs, one after the other:
#   - raw UDP: a spinning ping-pong of 8-byte datagrams
#     (transport/examples/udp_pingpong.rs) and a 2-second blast of 4096-byte
#     datagrams (sendmmsg, 32 per call) into a spinning sink (recvmmsg): the
#     kernel's ceiling for a datagram transport on this path; and the same
#     datagrams in UDP GSO trains of 64 KiB into a sink with UDP GRO: the
#     ceiling for one that uses both, as the soft-RoCE does (DOS_ROCE_GSO=1);
#   - dosbench latency (8 B, one-way), put_lat, get_lat and atomic_lat (8 B:
#     put + flush, get, fetch-and-add) and bw (1 MiB), one rank per host,
#     with `--transports shm,roce` (packets authenticated, the default), the
#     same with DOS_ROCE_AUTH=0 (plain RoCEv2 packets: what authentication
#     costs) and with `--transports shm,tcp`.
# Then prints a markdown table of medians and the ratios the issue names:
# roce put against the raw round trip (twice the one-way figure), roce
# bandwidth against the TCP stream and against the raw UDP blast.
#
# Environment: REPS (5), OUT (target/bench-roce), LINK_MTU (9000: the
# links' MTU), ROCE_MTU (4096: DOS_ROCE_MTU) and ROCE_GSO (1: DOS_ROCE_GSO). Above 4096 the RoCE MTU is
# this implementation's extension; LINK_MTU=65000 ROCE_MTU=32768 shows what
# the soft-RoCE does when the kernel's cost per datagram is spread over 32 KiB.
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-5}
OUT=${OUT:-target/bench-roce}
LINK_MTU=${LINK_MTU:-9000}
ROCE_MTU=${ROCE_MTU:-4096}
ROCE_GSO=${ROCE_GSO:-1}
# The raw blasts send datagrams of the RoCE MTU that the link carries (as the
# soft-RoCE picks it: IP, UDP and RoCE headers must fit around it).
DGRAM=$ROCE_MTU
while ((DGRAM > 256 && DGRAM + 80 > LINK_MTU)); do DGRAM=$((DGRAM / 2)); done
((EUID == 0)) || { echo "bench-roce: needs root (network namespaces)" >&2; exit 2; }
mkdir -p "$OUT"
: >"$OUT/samples.txt"
log() { echo "bench-roce: $*" >&2; }

cargo build --release --bins --examples >&2
DOSRUN=$PWD/target/release/dosrun
DOSBENCH=$PWD/target/release/dosbench
UDP=$PWD/target/release/examples/udp_pingpong
STATE=/tmp/dos-cluster
DOS_CLUSTER_MTU=$LINK_MTU ci/cluster.sh up 2 >&2
trap 'ci/cluster.sh down >&2 || true' EXIT
SSHW=$PWD/$OUT/ssh-shared
printf '#!/bin/sh\nexec ssh -F %s -o ControlMaster=auto -o ControlPath=%s/cm-%%h -o ControlPersist=600 "$@"\n' \
    "$STATE/ssh_config" "$STATE" >"$SSHW"
chmod +x "$SSHW"
for h in 1 2; do "$SSHW" "198.18.0.$h" true; done
H1=198.18.0.1 H2=198.18.0.2

# sample NAME VALUE: one measurement.
sample() { echo "$1 $2" >>"$OUT/samples.txt"; }

# bench T NAME ARGS...: runs dosbench ARGS over transports T; the value of its
# first size row goes to NAME.
# AUTH (1) is DOS_ROCE_AUTH.
bench() {
    local t=$1 name=$2
    shift 2
    local v
    v=$("$DOSRUN" --bind-to none --transports "$t" -H "$H1:1,$H2:1" --launch-agent "$SSHW" \
        -x "DOS_ROCE_MTU=$ROCE_MTU" -x "DOS_ROCE_GSO=$ROCE_GSO" -x "DOS_ROCE_AUTH=${AUTH:-1}" --timeout 300 "$DOSBENCH" "$@" 2>>"$OUT/errors.txt" | awk '/^[0-9]/ {print $2; exit}') || true
    [[ -n $v ]] && sample "$name" "$v" || log "no result: $name ($*)"
}

PORT=5000
for ((rep = 1; rep <= REPS; rep++)); do
    log "rep $rep/$REPS"
    PORT=$((PORT + 1))
    ip netns exec dos-h1 timeout 120 "$UDP" serve "$H1:$PORT" >/dev/null &
    srv=$!
    sleep 0.2
    v=$(ip netns exec dos-h2 timeout 120 "$UDP" "$H1:$PORT" | awk '$2 == 8 {print $3}')
    wait "$srv" || true
    sample udp_lat "$v"
    PORT=$((PORT + 1))
    ip netns exec dos-h2 timeout 120 "$UDP" sink "$H2:$PORT" >"$OUT/sink.txt" &
    srv=$!
    sleep 0.2
    ip netns exec dos-h1 "$UDP" blast "$H2:$PORT" "$DGRAM"
    wait "$srv" || true
    sample udp_bw "$(awk '{print $3}' "$OUT/sink.txt")"
    PORT=$((PORT + 1))
    ip netns exec dos-h2 timeout 120 "$UDP" sink-gro "$H2:$PORT" >"$OUT/sink.txt" &
    srv=$!
    sleep 0.2
    ip netns exec dos-h1 "$UDP" blast-gso "$H2:$PORT" "$DGRAM"
    wait "$srv" || true
    sample udp_gso_bw "$(awk '{print $3}' "$OUT/sink.txt")"
    for t in roce tcp; do
        bench "shm,$t" "${t}_lat" latency --min-size 8 --max-size 8
        bench "shm,$t" "${t}_put" put_lat --min-size 8 --max-size 8
        bench "shm,$t" "${t}_get" get_lat --min-size 8 --max-size 8
        bench "shm,$t" "${t}_atomic" atomic_lat --min-size 8 --max-size 8
        bench "shm,$t" "${t}_bw" bw --min-size 1M --max-size 1M
    done
    AUTH=0 bench shm,roce plain_lat latency --min-size 8 --max-size 8
    AUTH=0 bench shm,roce plain_put put_lat --min-size 8 --max-size 8
    AUTH=0 bench shm,roce plain_get get_lat --min-size 8 --max-size 8
    AUTH=0 bench shm,roce plain_atomic atomic_lat --min-size 8 --max-size 8
    AUTH=0 bench shm,roce plain_bw bw --min-size 1M --max-size 1M
done

median() {
    awk -v k="$1" '$1 == k {print $2}' "$OUT/samples.txt" | sort -g |
        awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
m() { median "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "—"; else printf "%.2f", a / b}'; }

summary=$OUT/summary.md
{
    echo "### soft-RoCE vs raw UDP vs TCP: $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "Two namespace hosts of \`ci/cluster.sh\` (veth + bridge, link MTU $LINK_MTU, DOS_ROCE_MTU=$ROCE_MTU, DOS_ROCE_GSO=$ROCE_GSO), one rank each, \`dosrun --bind-to none\`; medians of $REPS interleaved runs; $(nproc) cores, $(uname -r). Load average after: $(cut -d' ' -f1-3 /proc/loadavg). Command: \`REPS=$REPS LINK_MTU=$LINK_MTU ROCE_MTU=$ROCE_MTU ROCE_GSO=$ROCE_GSO ci/bench-roce.sh\`."
    echo
    echo "| 8 B unless noted | raw UDP | roce | roce, DOS_ROCE_AUTH=0 | tcp |"
    echo "|---|---:|---:|---:|---:|"
    echo "| one-way latency (us) | $(m udp_lat) | $(m roce_lat) | $(m plain_lat) | $(m tcp_lat) |"
    echo "| put + flush (us) | — | $(m roce_put) | $(m plain_put) | $(m tcp_put) |"
    echo "| get (us) | — | $(m roce_get) | $(m plain_get) | $(m tcp_get) |"
    echo "| fetch-and-add (us) | — | $(m roce_atomic) | $(m plain_atomic) | $(m tcp_atomic) |"
    echo "| bandwidth, 1 MiB messages (MB/s; raw: $DGRAM-byte datagrams) | $(m udp_bw) | $(m roce_bw) | $(m plain_bw) | $(m tcp_bw) |"
    echo "| raw bandwidth with UDP GSO and GRO (MB/s; $DGRAM-byte datagrams) | $(m udp_gso_bw) | | | |"
    echo
    echo "- packet authentication: bandwidth $(ratio "$(m roce_bw)" "$(m plain_bw)") of plain RoCEv2, one-way latency $(ratio "$(m roce_lat)" "$(m plain_lat)")x"
    rt=$(awk -v a="$(m udp_lat)" 'BEGIN {print 2 * a}')
    echo "- roce put / raw UDP round trip ($rt us): $(ratio "$(m roce_put)" "$rt") (target <= 1.5)"
    echo "- roce bandwidth / tcp: $(ratio "$(m roce_bw)" "$(m tcp_bw)") (target >= 0.5); / raw UDP blast: $(ratio "$(m roce_bw)" "$(m udp_bw)"); / raw GSO blast: $(ratio "$(m roce_bw)" "$(m udp_gso_bw)")"
} >"$summary"
cat "$summary"
