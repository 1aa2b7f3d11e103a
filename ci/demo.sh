#!/usr/bin/env bash
# The README's demonstration: build in release mode and run a few jobs with dosrun.
# Usage: ci/demo.sh [RANKS]     (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-4}"

ci/deps.sh
if ! command -v cargo >/dev/null 2>&1; then
    echo "demo: cargo is required (https://rustup.rs)" >&2
    exit 1
fi
cargo build --release --workspace --bins --examples
run() { echo "\$ dosrun $*"; target/release/dosrun "$@"; echo; }
run -n "$n" target/release/examples/hello
run -n "$n" target/release/examples/ring 10
run -n "$n" target/release/examples/pi
run -n "$n" target/release/examples/heat --check
run -n "$n" target/release/collcheck --cases 20
