#!/usr/bin/env bash
# A test cluster on one machine: N "hosts" that are network namespaces, each
# with a real sshd, joined by a Linux bridge. Needs root, iproute2,
# openssh-server, openssh-client and (for `loss`) nftables.
#
# Usage:
#   ci/cluster.sh up N          create hosts dos-h1..dos-hN (replaces a cluster that is up)
#   ci/cluster.sh slurm N       `up N`, then a Slurm cluster on the hosts (see Slurm below)
#   ci/cluster.sh down          remove everything (idempotent; also after a failed `up`)
#   ci/cluster.sh status        show the hosts, their sshd and their packet loss
#   ci/cluster.sh loss HOST P   drop P% of the packets HOST sends and P% of those it
#                               receives on its link (P=0 removes the rule); HOST is
#                               dos-hK, hK, K or 198.18.0.K
#   ci/cluster.sh segment on|off  on: every host cuts what it sends into single
#                               packets as it leaves (gso_max_segs 1 on its eth0),
#                               so captures and `loss` see each datagram of a UDP
#                               GSO train (and each TCP segment) as a NIC would put
#                               it on the wire; off (the default after `up`): trains
#                               cross the bridge whole, as veth allows
#
# Topology:
#
#   root namespace ── dos-br0 (bridge, 198.18.0.254/24)
#                        ├── dos-v1 ═══ eth0 198.18.0.1/24   namespace dos-h1, sshd on :22
#                        ├── dos-v2 ═══ eth0 198.18.0.2/24   namespace dos-h2, sshd on :22
#                        └── ...
#
# * The bridge lives in the root namespace and has 198.18.0.254, so dosrun (and
#   ssh) run in the root namespace reach every host; hosts reach each other and
#   198.18.0.254 through the bridge.
# * Addresses are in 198.18.0.0/24 only. The hosts have no default route, so
#   nothing they send is routed anywhere else; IPv6 is off on every link.
# * Each sshd runs in its namespace and in a UTS namespace of its own whose
#   host name is dos-hK, so `ssh ... hostname` tells the hosts apart. Files are
#   shared: the repository's binaries are at the same paths on every host.
# * State in $DOS_CLUSTER_DIR (default /tmp/dos-cluster): a client key pair
#   (id_ed25519), a host key per host, known_hosts, ssh_config (hosts by address,
#   or by name dos-hK), hostfile (`198.18.0.K slots=2` per host), the sshd
#   configurations, pid files and logs.
# * CPUs: each host gets its own share of the CPUs this script may use, as a
#   real node has its own cores: its sshd, and so everything started through it
#   (node agents, ranks), runs under `taskset` with that CPU list, which dosrun's
#   binding (hwloc and the affinity mask) sees as the node's CPUs. With N hosts
#   on C CPUs, N <= C: disjoint shares of C/N CPUs (the first hosts get one more
#   if C/N is not whole); N > C: one CPU each, round robin (hosts K and K+C
#   share one, a node oversubscribed on purpose). Without this, every host binds
#   its first rank to the same core 0, and two hosts' ranks take turns on it
#   while the other core idles (1 ms per message instead of microseconds).
#   DOS_CLUSTER_CPUS=shared gives every host all the CPUs instead (the old
#   behaviour; use --bind-to none then). `status` shows each host's CPUs.
# * `down` kills the sshd pids recorded in the state directory and then any
#   process still inside the cluster's namespaces (things started through the
#   cluster: ssh sessions, node agents), deletes the namespaces, links and bridge,
#   and removes the state directory.
#
# Slurm (`slurm N`): Debian's slurm-wlm 22.05 (ci/deps.sh installs it), which
# is built for several slurmd on one machine. slurmctld runs in dos-h1, one
# `slurmd -N dos-hK` in each host (its namespace, UTS name and CPUs, as sshd).
# Nodes are dos-h1..dos-hN with NodeAddr 198.18.0.K and a port of their own,
# 2 CPUs each (SlurmdParameters=config_overrides: the CPUs of the share do not
# matter), one partition `dos` (the default). Authentication auth/none (no
# munged; 22.05 still has it; root only, which the cluster is anyway),
# proctrack/linuxproc and task/none (no cgroups), select/cons_tres by CPU.
# Everything (slurm.conf, state, per-node spool and logs, pid files) lives
# in $STATE/slurm; the names dos-hK go in /etc/hosts between marker lines
# (so dosrun and srun resolve the node names), which `down` removes.
# Clients use it with SLURM_CONF=$STATE/slurm/slurm.conf (`. $STATE/slurm/env`
# sets it). `down` stops slurmd and slurmctld by their pids.
set -euo pipefail

STATE=${DOS_CLUSTER_DIR:-/tmp/dos-cluster}
BRIDGE=dos-br0
NET=198.18.0
MTU=${DOS_CLUSTER_MTU:-9000}
ROOT_ADDR=$NET.254
MAX_HOSTS=200
SLOTS=2
CPUS_MODE=${DOS_CLUSTER_CPUS:-spread}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

need() {
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "$c not found (install iproute2, openssh-server, openssh-client, nftables)"
    done
}

allowed_cpus() {
    # The CPUs this script may run on, one per line, from its affinity list.
    local list r
    list=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
    for r in ${list//,/ }; do
        if [[ "$r" == *-* ]]; then seq "${r%-*}" "${r#*-}"; else echo "$r"; fi
    done
}

host_cpus() {
    # The CPU list (taskset -c syntax) of host $1 of $2 hosts; see CPUs above.
    local k=$1 n=$2 cpus c
    mapfile -t cpus < <(allowed_cpus)
    c=${#cpus[@]}
    [ "$c" -ge 1 ] || die "no CPUs in this process's affinity list"
    if [ "$CPUS_MODE" = shared ]; then
        (IFS=,; echo "${cpus[*]}")
    elif [ "$n" -le "$c" ]; then
        local base=$((c / n)) rem=$((c % n)) start len
        start=$(((k - 1) * base + (k - 1 < rem ? k - 1 : rem)))
        len=$((base + (k - 1 < rem ? 1 : 0)))
        (IFS=,; echo "${cpus[*]:start:len}")
    else
        echo "${cpus[$(((k - 1) % c))]}"
    fi
}

require_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"
}

# The cluster's namespaces, sorted by number.
namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^dos-h[0-9]+$' | sort -t h -k 2 -n || true
}

# HOST argument -> namespace number K.
host_number() {
    local h=$1
    case "$h" in
        dos-h*) h=${h#dos-h} ;;
        h*) h=${h#h} ;;
        "$NET".*) h=${h#"$NET".} ;;
    esac
    [[ "$h" =~ ^[0-9]+$ ]] && [ "$h" -ge 1 ] && [ "$h" -le "$MAX_HOSTS" ] || die "unknown host: $1"
    grep -qx "dos-h$h" < <(ip netns list 2>/dev/null | awk '{print $1}') || die "no such host: $1 (dos-h$h is not up)"
    echo "$h"
}

# Is $1 a live sshd started with a configuration from our state directory?
our_sshd() {
    local pid=$1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -q -- "-f $STATE/h[0-9]*/sshd_config" < <(tr '\0' ' ' <"/proc/$pid/cmdline") || return 1
}

# Is pid $1 running (a zombie waiting for its reaper is not)?
running() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

kill_pids() {
    # $@: pids; TERM, then KILL whatever is left after a short wait.
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 50); do
        local alive=0
        for p in "$@"; do
            if running "$p"; then alive=1; fi
        done
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
}

cmd_down() {
    require_root
    # 0. ssh connection-sharing masters (benchmarks open them under $STATE/cm-*).
    local sock
    for sock in "$STATE"/cm-*; do
        [ -S "$sock" ] || continue
        ssh -o ControlPath="$sock" -O exit dos-cluster-master >/dev/null 2>&1 || true
    done
    # 1. Slurm's daemons (their pid files), and the host names.
    slurm_down
    # The sshd listeners we recorded.
    local pids=()
    for f in "$STATE"/h*/sshd.pid; do
        [ -r "$f" ] || continue
        local pid
        pid=$(cat "$f" 2>/dev/null || true)
        if our_sshd "$pid"; then pids+=("$pid"); fi
    done
    kill_pids "${pids[@]}"
    # 2. Whatever still runs inside the cluster's namespaces.
    local ns
    for ns in $(namespaces); do
        local left=()
        mapfile -t left < <(ip netns pids "$ns" 2>/dev/null || true)
        kill_pids "${left[@]}"
    done
    # 3. Loss rules in this namespace, links, namespaces, bridge, state.
    local l t
    for t in $(nft list tables netdev 2>/dev/null | awk '{print $3}' | grep -E '^dos_loss_h[0-9]+$' || true); do
        nft delete table netdev "$t" 2>/dev/null || true
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^dos-v[0-9]+$' || true); do
        ip link del "$l" 2>/dev/null || true
    done
    for ns in $(namespaces); do
        ip netns del "$ns" 2>/dev/null || true
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
    rm -rf "$STATE"
    # Check.
    [ -z "$(namespaces)" ] || die "namespaces left: $(namespaces | tr '\n' ' ')"
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || die "bridge $BRIDGE left"
    return 0
}

up_failed() {
    local rc=$?
    trap - EXIT
    echo "cluster.sh: up failed; removing what was made" >&2
    cmd_down || true
    exit $((rc == 0 ? 1 : rc))
}

cmd_up() {
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_HOSTS" ] || die "up N: N must be a number from 1 to $MAX_HOSTS"
    require_root
    need ip ssh ssh-keygen /usr/sbin/sshd unshare taskset
    case "$CPUS_MODE" in
        spread | shared) ;;
        *) die "DOS_CLUSTER_CPUS must be spread or shared, not '$CPUS_MODE'" ;;
    esac
    cmd_down
    # Whatever makes `up` stop half-way (a failed command, die), the partial
    # cluster is removed.
    trap up_failed EXIT

    mkdir -p "$STATE"
    chmod 700 "$STATE"
    # sshd's privilege separation directory (Debian).
    mkdir -p /run/sshd
    chmod 755 /run/sshd

    # Keys: one client key, one host key per host.
    ssh-keygen -q -t ed25519 -N '' -C dos-cluster -f "$STATE/id_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    : >"$STATE/known_hosts"
    : >"$STATE/hostfile"

    # The bridge, with the root namespace on it. Jumbo frames (MTU 9000) on
    # every link, as RoCE fabrics are set up: the soft-RoCE then uses IBA's
    # largest MTU, 4096 (1024 on a 1500-byte Ethernet).
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" mtu "$MTU"
    if [ -e "/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6" ]; then
        echo 1 >"/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6"
    fi
    ip addr add "$ROOT_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # No delayed ACKs on the cluster's routes (quickack): ssh's login exchange
    # writes, writes again and then waits, and with Nagle on both ends that
    # stalls twice for the 40 ms delayed-ACK timer (ssh to a host: 127 ms
    # instead of 35 ms here). Nothing else depends on it.
    ip route replace "$NET.0/24" dev "$BRIDGE" proto kernel scope link src "$ROOT_ADDR" quickack 1

    cat >"$STATE/ssh_config" <<EOF
# Generated by ci/cluster.sh: ssh -F $STATE/ssh_config 198.18.0.K COMMAND
# (or dos-hK COMMAND: the aliases at the end give each name its address).
Host $NET.* dos-h*
    User root
    Port 22
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    # Classic ECDH: OpenSSH 9's default post-quantum exchange costs ~50 ms of
    # CPU per connection here, a third of an ssh start-up.
    KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
    BatchMode yes
    PasswordAuthentication no
    ConnectTimeout 5
    ServerAliveInterval 5
    ServerAliveCountMax 3
    LogLevel ERROR
EOF

    local k
    for k in $(seq "$n"); do
        local ns=dos-h$k addr=$NET.$k dir=$STATE/h$k
        mkdir -p "$dir"
        ip netns add "$ns"
        ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6' 2>/dev/null || true
        ip link add "dos-v$k" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$ns"
        if [ -e "/proc/sys/net/ipv6/conf/dos-v$k/disable_ipv6" ]; then
            echo 1 >"/proc/sys/net/ipv6/conf/dos-v$k/disable_ipv6"
        fi
        ip link set "dos-v$k" master "$BRIDGE"
        ip link set "dos-v$k" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route replace "$NET.0/24" dev eth0 proto kernel scope link src "$addr" quickack 1

        ssh-keygen -q -t ed25519 -N '' -C "$ns" -f "$dir/ssh_host_ed25519_key"
        echo "$addr,$ns $(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >>"$STATE/known_hosts"
        printf 'Host %s\n    HostName %s\n' "$ns" "$addr" >>"$STATE/ssh_config"
        echo "$addr slots=$SLOTS" >>"$STATE/hostfile"
        cat >"$dir/sshd_config" <<EOF
# Generated by ci/cluster.sh for $ns.
ListenAddress $addr:22
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
MaxStartups 200:30:400
MaxSessions 100
LoginGraceTime 20
ClientAliveInterval 10
ClientAliveCountMax 3
Subsystem sftp internal-sftp
# Remote commands skip root's ~/.bashrc: bash reads it for a command sent
# over ssh only when SHLVL says it is the first shell, and this image's rc
# file runs pyenv's init, 90 ms on every command (a host with a plain rc).
SetEnv SHLVL=1
EOF
        /usr/sbin/sshd -t -f "$dir/sshd_config"
        # Own UTS namespace so the host is called dos-hK, own CPUs (see CPUs
        # above); sshd daemonizes after it listens and writes its pid file.
        local cpus
        cpus=$(host_cpus "$k" "$n")
        echo "$cpus" >"$dir/cpus"
        ip netns exec "$ns" taskset -c "$cpus" unshare --uts sh -c \
            'hostname "$1" && exec /usr/sbin/sshd -f "$2" -E "$3"' \
            sh "$ns" "$dir/sshd_config" "$dir/sshd.log"
        local pid=""
        for _ in $(seq 50); do
            pid=$(cat "$dir/sshd.pid" 2>/dev/null || true)
            [ -n "$pid" ] && break
            sleep 0.1
        done
        our_sshd "$pid" || die "sshd of $ns did not start (see $dir/sshd.log)"
    done
    echo "$n" >"$STATE/hosts"

    # Every host answers over ssh.
    for k in $(seq "$n"); do
        local ok=0
        for _ in $(seq 20); do
            if ssh -F "$STATE/ssh_config" "$NET.$k" true 2>/dev/null; then
                ok=1
                break
            fi
            sleep 0.25
        done
        [ "$ok" = 1 ] || die "ssh to $NET.$k fails: $(ssh -F "$STATE/ssh_config" "$NET.$k" true 2>&1 | head -1)"
    done
    trap - EXIT

    cat <<EOF
cluster up: $n host(s) dos-h1..dos-h$n ($NET.1..$NET.$n) on bridge $BRIDGE; this namespace is $ROOT_ADDR
  ssh:       ssh -F $STATE/ssh_config $NET.$((n > 1 ? 2 : 1)) hostname
  hostfile:  $STATE/hostfile   ($SLOTS slots per host)
  cpus:      $(for k in $(seq "$n"); do printf 'dos-h%s %s  ' "$k" "$(cat "$STATE/h$k/cpus")"; done)
  in a host: ip netns exec dos-h1 COMMAND
  loss:      ci/cluster.sh loss dos-h1 10   (0 removes it)
  status:    ci/cluster.sh status
  remove:    ci/cluster.sh down
EOF
}

SLURM_PORT_CTLD=6817
SLURM_PORT_NODE=6900
HOSTS_BEGIN="# dos-cluster hosts begin"
HOSTS_END="# dos-cluster hosts end"

# Is $1 a live Slurm daemon started with our configuration?
our_slurm() {
    local pid=$1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/environ" ] || return 1
    grep -qx "SLURM_CONF=$STATE/slurm/slurm.conf" < <(tr '\0' '\n' <"/proc/$pid/environ") || return 1
}

slurm_down() {
    local pids=() f pid
    for f in "$STATE"/slurm/*.pid "$STATE"/slurm/*/slurmd.pid; do
        [ -r "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if our_slurm "$pid"; then pids+=("$pid"); fi
    done
    kill_pids "${pids[@]}"
    if grep -qx "$HOSTS_BEGIN" /etc/hosts 2>/dev/null; then
        # Rewritten in place: /etc/hosts may be a bind mount.
        local kept
        kept=$(sed "/^$HOSTS_BEGIN\$/,/^$HOSTS_END\$/d" /etc/hosts)
        printf '%s\n' "$kept" >/etc/hosts
    fi
}

slurm_failed() {
    local rc=$?
    trap - EXIT
    echo "cluster.sh: slurm failed; removing what was made; the logs:" >&2
    tail -n 20 "$STATE"/slurm/*.log "$STATE"/slurm/*/slurmd.log 2>/dev/null >&2 || true
    cmd_down || true
    exit $((rc == 0 ? 1 : rc))
}

cmd_slurm() {
    local n=${1:-}
    need slurmctld slurmd sinfo
    cmd_up "$n"
    trap slurm_failed EXIT
    local dir=$STATE/slurm
    local conf=$dir/slurm.conf k
    mkdir -p "$dir/ctld"
    {
        echo "$HOSTS_BEGIN"
        for k in $(seq "$n"); do echo "$NET.$k dos-h$k"; done
        echo "$HOSTS_END"
    } >>/etc/hosts
    {
        echo "# Generated by ci/cluster.sh slurm: $n nodes in network namespaces."
        echo "ClusterName=dos"
        echo "SlurmctldHost=dos-h1($NET.1)"
        echo "SlurmctldPort=$SLURM_PORT_CTLD"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/none"
        echo "CredType=cred/none"
        echo "MpiDefault=none"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobCompType=jobcomp/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_CPU"
        echo "SlurmdParameters=config_overrides"
        echo "ReturnToService=2"
        echo "StateSaveLocation=$dir/ctld"
        echo "SlurmctldPidFile=$dir/slurmctld.pid"
        echo "SlurmctldLogFile=$dir/slurmctld.log"
        echo "SlurmdSpoolDir=$dir/%n/spool"
        echo "SlurmdPidFile=$dir/%n/slurmd.pid"
        echo "SlurmdLogFile=$dir/%n/slurmd.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "SlurmctldTimeout=30"
        echo "SlurmdTimeout=30"
        echo "InactiveLimit=0"
        echo "MinJobAge=2"
        echo "KillWait=2"
        echo "MessageTimeout=10"
        echo "MailProg=/bin/true"
        for k in $(seq "$n"); do
            mkdir -p "$dir/dos-h$k/spool"
            echo "NodeName=dos-h$k NodeHostname=dos-h$k NodeAddr=$NET.$k Port=$((SLURM_PORT_NODE + k)) CPUs=$SLOTS State=UNKNOWN"
        done
        echo "PartitionName=dos Nodes=dos-h[1-$n] Default=YES MaxTime=INFINITE State=UP"
    } >"$conf"
    echo "export SLURM_CONF=$conf" >"$dir/env"
    # The daemons daemonize and write their pid files; their environment
    # carries SLURM_CONF, which tells `down` they are ours. nsenter, not `ip
    # netns exec`: that mounts a /sys of the namespace without the cgroup
    # file systems, and slurmd refuses to start without them even with
    # task/none (its cgroup plugin is loaded anyway; it then uses none).
    nsenter --net=/run/netns/dos-h1 taskset -c "$(cat "$STATE/h1/cpus")" unshare --uts sh -c \
        'hostname dos-h1 && exec env SLURM_CONF="$1" /usr/sbin/slurmctld -c' sh "$conf"
    for k in $(seq "$n"); do
        nsenter --net="/run/netns/dos-h$k" taskset -c "$(cat "$STATE/h$k/cpus")" unshare --uts sh -c \
            'hostname "$1" && exec env SLURM_CONF="$2" /usr/sbin/slurmd -N "$1"' sh "dos-h$k" "$conf"
    done
    # Every node idle.
    local ok=0
    for _ in $(seq 150); do
        if [ "$(SLURM_CONF=$conf sinfo -h -N -o '%N %T' 2>/dev/null | grep -c ' idle$' || true)" = "$n" ]; then
            ok=1
            break
        fi
        sleep 0.2
    done
    [ "$ok" = 1 ] || die "the Slurm nodes are not idle: $(SLURM_CONF=$conf sinfo -N 2>&1 | tr '\n' ';')"
    trap - EXIT
    echo "slurm up: slurmctld in dos-h1, slurmd in dos-h1..dos-h$n ($SLOTS CPUs each), partition dos"
    echo "  use:       . $dir/env   (SLURM_CONF=$conf), then salloc, srun, sbatch, squeue"
    echo "  logs:      $dir/slurmctld.log, $dir/dos-hK/slurmd.log"
}

loss_of() {
    # Prints the loss percentage configured in namespace $1 (0 if none).
    local p
    local rules
    rules=$(ip netns exec "$1" nft list table netdev dos_loss 2>/dev/null || true)
    p=$(echo "$rules" | grep -o 'mod 100 < [0-9]*' | head -1 | awk '{print $4}' || true)
    if [ -z "$p" ] && grep -q 'drop' <<<"$rules"; then p=100; fi
    echo "${p:-0}"
}

drop_loss_rules() {
    # Removes host $1's loss rules (both ends of its link).
    ip netns exec "dos-h$1" nft delete table netdev dos_loss 2>/dev/null || true
    nft delete table netdev "dos_loss_h$1" 2>/dev/null || true
}

cmd_loss() {
    [ $# = 2 ] || die "usage: loss HOST PERCENT"
    require_root
    need nft
    local k pct=$2 ns
    k=$(host_number "$1")
    ns=dos-h$k
    [[ "$pct" =~ ^[0-9]+$ ]] && [ "$pct" -le 100 ] || die "loss: PERCENT must be a number from 0 to 100"
    drop_loss_rules "$k"
    if [ "$pct" = 0 ]; then
        echo "$ns: no packet loss"
        return 0
    fi
    # numgen gives 0..99: `< P` drops P% of the packets (100%: every packet).
    local match="numgen random mod 100 < $pct"
    if [ "$pct" = 100 ]; then match=""; fi
    # At the ingress of each end of the host's link: what the host receives
    # (eth0, inside it) and what it sends (dos-vK, in this namespace). There a
    # GSO train is still whole unless the sender cut it (`segment on`): netfilter's
    # output hook would always see whole trains.
    ip netns exec "$ns" nft -f - <<EOF
table netdev dos_loss {
    chain receive {
        type filter hook ingress device "eth0" priority 0; policy accept;
        meta protocol ip $match drop
    }
}
EOF
    nft -f - <<EOF
table netdev dos_loss_h$k {
    chain send {
        type filter hook ingress device "dos-v$k" priority 0; policy accept;
        meta protocol ip $match drop
    }
}
EOF
    echo "$ns: dropping $pct% of the packets in and out of eth0"
}

cmd_segment() {
    [ $# = 1 ] && { [ "$1" = on ] || [ "$1" = off ]; } || die "usage: segment on|off"
    require_root
    local ns segs=65535
    [ "$1" = on ] && segs=1
    for ns in $(namespaces); do
        ip -n "$ns" link set dev eth0 gso_max_segs "$segs"
    done
    echo "cluster: segmentation on the links $1"
}

cmd_status() {
    local nss
    nss=$(namespaces)
    if [ -z "$nss" ] && ! ip link show "$BRIDGE" >/dev/null 2>&1 && [ ! -d "$STATE" ]; then
        echo "cluster: down"
        return 0
    fi
    local bridge="missing"
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        bridge="$BRIDGE $(ip -br addr show dev "$BRIDGE" | awk '{print $2, $3}')"
    fi
    echo "cluster: $(echo "$nss" | grep -c . || true) host(s); bridge: $bridge; state: $STATE"
    local ns
    for ns in $nss; do
        local k=${ns#dos-h} addr sshd="no sshd" pid
        addr=$(ip -n "$ns" -br addr show dev eth0 2>/dev/null | awk '{print $2, $3}')
        pid=$(cat "$STATE/h$k/sshd.pid" 2>/dev/null || true)
        if our_sshd "$pid"; then sshd="sshd pid $pid"; fi
        printf '  %-8s eth0 %-22s %-16s cpus %s, loss %s%%, gso_max_segs %s\n' "$ns" "$addr" "$sshd" \
            "$(cat "$STATE/h$k/cpus" 2>/dev/null || echo '?')" "$(loss_of "$ns")" \
            "$(ip -n "$ns" -d link show dev eth0 | grep -o 'gso_max_segs [0-9]*' | cut -d' ' -f2)"
    done
    if [ -r "$STATE/hostfile" ]; then
        echo "hostfile $STATE/hostfile:"
        sed 's/^/  /' "$STATE/hostfile"
    fi
}

case "${1:-}" in
    up)
        shift
        [ $# = 1 ] || die "usage: up N"
        cmd_up "$1"
        ;;
    slurm)
        shift
        [ $# = 1 ] || die "usage: slurm N"
        require_root
        cmd_slurm "$1"
        ;;
    down)
        [ $# = 1 ] || die "usage: down"
        cmd_down
        echo "cluster down"
        ;;
    status)
        cmd_status
        ;;
    loss)
        shift
        cmd_loss "$@"
        ;;
    segment)
        shift
        cmd_segment "$@"
        ;;
    *)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
