#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer, nightly) for
# SECONDS each (default 600), one after another, or only the targets
# named; prints each target's executions per second, corpus size and
# whether it found a crash. Seeds come from fuzz/seeds/TARGET (committed);
# what the fuzzer adds goes to .cache/fuzz/corpus/TARGET (not committed),
# crashes to fuzz/artifacts/TARGET (turn each into a regression test).
#   bench/fuzz.sh [SECONDS] [TARGET...]
# Builds without a sanitizer: the code under test is safe Rust, and what
# is looked for is a panic, a stack overflow, a leak of time or memory.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)" >&2
    cargo install --locked --quiet cargo-fuzz
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
cargo +nightly fuzz build --sanitizer none -O >&2
status=0
printf '%-20s %10s %10s %8s %s\n' target seconds execs/s corpus result
for t in "${targets[@]}"; do
    corpus=".cache/fuzz/corpus/$t"
    mkdir -p "$corpus"
    log=".cache/fuzz/$t.log"
    if cargo +nightly fuzz run --sanitizer none -O "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see $log, fuzz/artifacts/$t)"
        status=1
    fi
    execs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    size=$(find "$corpus" -type f | wc -l)
    printf '%-20s %10s %10s %8s %s (%s runs)\n' "$t" "$seconds" "$execs" "$size" "$result" "$runs"
done
exit $status
