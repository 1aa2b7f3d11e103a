#!/usr/bin/env bash
# The project's test command (the README's): lint, build once, run every test.
# Usage: ci/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

ci/deps.sh

step() { printf '\n== %s ==\n' "$*"; }

step "layers (ARCHITECTURE.md, \"Module rules\")"
ci/layers.sh

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "verbs backend (feature verbs: compiles, lints, unit tests; hardware tests stay ignored)"
cargo clippy -p dos-transport --features verbs --all-targets -- -D warnings
cargo clippy -p dos-launcher --features verbs --all-targets -- -D warnings
cargo test -p dos-transport --features verbs verbs

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "build (binaries: dosrun and the check programs of checks/; examples: used by the multi-process tests)"
cargo build --workspace --bins --examples

step "tests"
cargo test --workspace

step "rsmpi: dosbench built with the mpi crate against dos's libmpi, run under dosrun (target/rsmpi)"
ci/rsmpi.sh

step "dosfs: a client in another network namespace gets TCP, one on the servers' node slots (namespace cluster; skipped when not root)"
cargo test -p dos-fs --test datapath -- --ignored a_client_in_another_network_namespace_uses_tcp

step "dosfs: data by RDMA (soft-RoCE) from another namespace host into the servers' slots, and a server killed mid-transfer (namespace cluster)"
cargo test -p dos-fs --test rdma -- --ignored namespace_roce

step "recovery, the issue's trials: 20 random kills of heat_ckpt on one host, 5 node failures on 4 namespace hosts with a spare"
cargo test -p dos --test ckpt -- --ignored max_restarts_soak
cargo test -p dos-launcher --test restart -- --ignored heat_node_failure_soak

step "Slurm: salloc/sbatch/srun on a real Slurm in the namespace cluster (ci/cluster.sh slurm 3; needs root and slurm-wlm)"
cargo test -p dos-launcher --test slurm -- --ignored on_a_real_slurm_cluster

step "dosfs: a 1 GiB file copied in and out bit-exact, then verified (release build)"
cargo test -p dos-fs --release --test perf -- --ignored --nocapture cp_1gib_in_and_out_bit_exact
