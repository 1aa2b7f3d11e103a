#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each.
#
#   ci/fuzz.sh [SECONDS]        default 30 seconds per target
#
# Works with the stable toolchain alone: by default the targets are built without
# a sanitizer (`--sanitizer none`), which needs no nightly flag. The code under test
# (decoders of network bytes) is safe Rust, so what the fuzzer finds are panics,
# failed assertions and arithmetic overflows (debug assertions are on), and a
# sanitizer would add little but cost about ten times the executions.
# FUZZ_SANITIZER=address (or another cargo-fuzz sanitizer) builds with one; on a
# stable toolchain that needs RUSTC_BOOTSTRAP=1, which this script then sets.
#
# The corpus grows in fuzz/corpus/<target> (kept between runs, not committed); a
# crash leaves its input in fuzz/artifacts/<target>/ and the script exits 1 after
# running the other targets. Reproduce one with
#   cd fuzz && cargo fuzz run --sanitizer none <target> artifacts/<target>/<file>
set -euo pipefail

secs=${1:-30}
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz.sh: installing cargo-fuzz"
	cargo install cargo-fuzz --locked
fi

sanitizer=${FUZZ_SANITIZER:-none}
if [ "$sanitizer" != none ] && ! [[ "$(rustc --version)" == *nightly* ]]; then
	export RUSTC_BOOTSTRAP=1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

start=$(date +%s)
cargo fuzz build --sanitizer "$sanitizer"
built=$(date +%s)

failed=()
for target in $(cargo fuzz list); do
	echo "fuzz.sh: $target for ${secs}s"
	if ! cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
		-max_total_time="$secs" -timeout=10 -print_final_stats=1 2>"$logs/$target.log"; then
		failed+=("$target")
		tail -n 60 "$logs/$target.log" >&2
	else
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$logs/$target.log" || true
	fi
done
end=$(date +%s)

echo "fuzz.sh: build $((built - start))s, fuzzing $((end - built))s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
	exit 1
fi
echo "fuzz.sh: all targets ran ${secs}s without a failure"
