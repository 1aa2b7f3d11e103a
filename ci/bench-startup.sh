#!/usr/bin/env bash
# Job start-up for 3 hosts x 2 ranks on the namespace cluster with a real
# Slurm (ci/cluster.sh slurm 3), measured in one run, interleaved:
#
#   ssh     dosrun --hostfile with ssh node agents (outside any allocation)
#   srun    dosrun inside the allocation: node agents started by srun
#   direct  srun -n 6 itself (no dosrun; a plain program: see below)
#   ompi    Open MPI's mpirun in the same allocation (its daemons through srun)
#
# each with a plain program (`true`: the launch alone) and with a program
# that joins the job (dos's hello example: dos::init, a line, finalize; for
# mpirun an MPI_Init/MPI_Finalize C program).
#
#   flock /tmp/dos-cluster.lock ci/bench-startup.sh [TRIALS]     default 10
#
# Needs root, slurm-wlm (ci/deps.sh), Open MPI's mpicc/mpirun, and builds a
# release dosrun and dos's hello example. Takes the namespace cluster: brings
# it up with Slurm, and down at the end. Prints, per command, the median and
# the minimum wall time in ms.
#
# One host, many ranks (issue 17: `-n 2 hello` under 5 ms, `-n 64` under 50 ms):
#
#   ci/bench-startup.sh local [ROUNDS] [NP]         defaults 5 and 64
#
# builds the release dosrun and hello example and runs, in ROUNDS hyperfine
# rounds of 5 runs with the order reversed on every other round (interleaved,
# for a shared machine): dosrun -n NP /bin/true, Open MPI's
# `mpirun --oversubscribe -n NP /bin/true`, MPICH's `mpiexec.hydra -n NP
# /bin/true`, dosrun -n NP hello and dosrun -n 2 hello, the NP rows also with
# DOS_SPAWN_THREADS=1 (the ranks started from one thread: the execs not
# overlapped, as before session 12; `env` adds ~1 ms); with BASE=DIR also
# DIR/dosrun and DIR/hello (another build, e.g. the main branch's, made with
# the same cargo command) for an A/B. Prints per command the median and
# minimum wall time of all runs, the median CPU (user+system of the whole
# job) of the rounds, and the load average before and after. Needs no root
# and no cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ "${1:-}" = local ]; then
	rounds=${2:-5}
	np=${3:-64}
	cargo build -q --release -p dos-launcher --bin dosrun -p dos --example hello
	rel=$root/target/release
	cmds=("$rel/dosrun -n $np /bin/true")
	# The same dosrun starting the ranks from one thread (execs not overlapped).
	cmds+=("env DOS_SPAWN_THREADS=1 $rel/dosrun -n $np /bin/true")
	if [ -n "${BASE:-}" ]; then cmds+=("$BASE/dosrun -n $np /bin/true"); fi
	# Open MPI refuses root without both.
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
	# Bounded: Open MPI's mpirun did not come back from -n 64 on the 2-core VM
	# (2026-12-08); a run that fails or times out shows as such in the times.
	if command -v mpirun.openmpi >/dev/null; then cmds+=("timeout 30 mpirun.openmpi --oversubscribe -n $np /bin/true"); fi
	if command -v mpiexec.hydra >/dev/null; then cmds+=("timeout 30 mpiexec.hydra -n $np /bin/true"); fi
	cmds+=("$rel/dosrun -n $np $rel/examples/hello")
	cmds+=("env DOS_SPAWN_THREADS=1 $rel/dosrun -n $np $rel/examples/hello")
	if [ -n "${BASE:-}" ]; then cmds+=("$BASE/dosrun -n $np $BASE/hello"); fi
	cmds+=("$rel/dosrun -n 2 $rel/examples/hello")
	if [ -n "${BASE:-}" ]; then cmds+=("$BASE/dosrun -n 2 $BASE/hello"); fi
	dir=$(mktemp -d /tmp/bench-startup.XXXXXX)
	trap 'rm -rf "$dir"' EXIT
	echo "start-up on one host, $rounds rounds x 5 runs interleaved ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
	for r in $(seq "$rounds"); do
		order=("${cmds[@]}")
		if [ $((r % 2)) -eq 0 ]; then
			order=()
			for ((i = ${#cmds[@]} - 1; i >= 0; i--)); do order+=("${cmds[$i]}"); done
		fi
		hyperfine -N -i -w 1 -r 5 --export-json "$dir/r$r.json" "${order[@]}" >/dev/null 2>&1
	done
	python3 - "$dir" "${cmds[@]}" <<'PY'
import glob, json, statistics as st, sys
d, cmds = sys.argv[1], sys.argv[2:]
t = {c: [] for c in cmds}
cpu = {c: [] for c in cmds}
for f in glob.glob(d + "/r*.json"):
    for r in json.load(open(f))["results"]:
        t[r["command"]] += r["times"]
        cpu[r["command"]].append(r["user"] + r["system"])
print("| command | median ms | min ms | CPU ms | runs |")
print("|---|---:|---:|---:|---:|")
for c in cmds:
    print(f"| `{c}` | {st.median(t[c]) * 1e3:.1f} | {min(t[c]) * 1e3:.1f} | {st.median(cpu[c]) * 1e3:.1f} | {len(t[c])} |")
PY
	echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
	exit 0
fi
trials=${1:-10}
cargo build -q --release -p dos-launcher --bin dosrun
cargo build -q --release -p dos --example hello
dosrun=$root/target/release/dosrun
hello=$root/target/release/examples/hello
dir=$(mktemp -d /tmp/bench-startup.XXXXXX)
cleanup() {
	bash "$root/ci/cluster.sh" down >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/mpi_init.c" <<'EOF'
#include <mpi.h>
int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Finalize();
    return 0;
}
EOF
mpicc -O2 -o "$dir/mpi_init" "$dir/mpi_init.c"
bash ci/cluster.sh slurm 3 >/dev/null
state=/tmp/dos-cluster
export SLURM_CONF=$state/slurm/slurm.conf
# Open MPI refuses root without both.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The allocation-side cases run inside one salloc, which runs this script
# again with `inside`: every case of a trial then starts in the same state.
cat >"$dir/inside.sh" <<EOF
#!/usr/bin/env bash
set -eu
trials=\$1
cases=(
	"$dosrun true"
	"$dosrun $hello"
	"srun -n 6 --mpi=none true"
	"srun -n 6 --mpi=pmi2 $hello"
	"mpirun -n 6 --mca plm slurm true"
	"mpirun -n 6 --mca plm slurm $dir/mpi_init"
)
names=("srun agents: dosrun true" "srun agents: dosrun hello" "direct: srun -n 6 true" "direct: srun --mpi=pmi2 hello" "ompi: mpirun true" "ompi: mpirun mpi_init")
ssh_cases=(
	"$dosrun --hostfile $state/hostfile --launch-agent 'ssh -F $state/ssh_config -o BatchMode=yes' -n 6 true"
	"$dosrun --hostfile $state/hostfile --launch-agent 'ssh -F $state/ssh_config -o BatchMode=yes' -n 6 $hello"
)
ssh_names=("ssh agents: dosrun true" "ssh agents: dosrun hello")
all=("\${ssh_cases[@]}" "\${cases[@]}")
alln=("\${ssh_names[@]}" "\${names[@]}")
for i in "\${!all[@]}"; do : >"$dir/t\$i"; done
for _ in \$(seq "\$trials"); do
	for i in "\${!all[@]}"; do
		if [ "\$i" -lt "\${#ssh_cases[@]}" ]; then
			# Outside the allocation: no SLURM_* variable reaches dosrun.
			run=(env \$(env | grep -o '^SLURM_[A-Z_]*' | grep -v '^SLURM_CONF\$' | sed 's/^/-u /') bash -c "\${all[\$i]}")
		else
			run=(bash -c "\${all[\$i]}")
		fi
		t0=\$(date +%s%N)
		if ! "\${run[@]}" >/dev/null 2>"$dir/err"; then
			echo "failed: \${alln[\$i]}: \$(tail -3 "$dir/err")" >&2
		fi
		t1=\$(date +%s%N)
		echo \$(((t1 - t0) / 1000)) >>"$dir/t\$i"
	done
done
for i in "\${!all[@]}"; do
	sort -n "$dir/t\$i" | awk -v what="\${alln[\$i]}" '
		{ v[NR] = \$1 }
		END { printf "%-30s median %7.1f ms  min %7.1f ms\n", what, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
done
EOF
chmod +x "$dir/inside.sh"
echo "start-up, 3 hosts x 2 ranks, $trials trials interleaved ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
salloc -N 3 -n 6 --quiet "$dir/inside.sh" "$trials"
