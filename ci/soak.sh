#!/usr/bin/env bash
# The heavy versions of the fault, attack and scale tests, outside the default
# CI path (minutes to tens of minutes on 2 cores): hundreds of blame trials on
# one host and across the namespace cluster, rmacheck over the soft-RoCE 20
# times across hosts, 200 short soft-RoCE jobs under loss, a 5 s stopped rank,
# 32 ranks sending to one, 30 jobs started under held connections, and the
# soft-RoCE engine's soaks in its simulated network.
#
# Usage: ci/soak.sh        (as root, like ci/test.sh; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
ci/deps.sh

step() { printf '\n== %s ==\n' "$*"; }

step "build (release)"
cargo build --release --workspace --bins --examples

step "soft-RoCE engine soaks (simulated network)"
cargo test --release -p dos-transport roce::sim -- --ignored

step "soft-RoCE jobs: long stop, 32 ranks to one, 200 jobs under loss"
cargo test --release -p dos --test roce -- --ignored

step "blame: 300 trials of kill -9 during collectives"
cargo test --release -p dos-launcher --test faults -- --ignored

step "wire-up under attack: 30 jobs with held connections"
cargo test --release -p dos-launcher --test scale -- --ignored

step "across the namespace hosts: 64 blame trials, rmacheck over roce 20 times (debug build, as in CI)"
cargo build --workspace --bins --examples
cargo test -p dos-launcher --test multinode -- --ignored

step "recovery: 20 random kills of heat_ckpt and of restartcheck under --max-restarts, 20 checkpoint kill trials"
cargo test -p dos --test ckpt -- --ignored max_restarts_soak kill_soak
cargo test -p dos-launcher --test restart -- --ignored random_kills_soak

step "recovery across the namespace hosts: 5 node failures each (restartcheck, heat_ckpt from L2/L3 on a spare)"
cargo test -p dos-launcher --test restart -- --ignored lost_host_soak heat_node_failure_soak
