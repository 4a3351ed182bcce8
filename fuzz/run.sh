#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after the other, on stable Rust
# (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly-only sanitizer flags).
#   fuzz/run.sh [seconds per target] [target…]
# Needs `cargo install cargo-fuzz`. Corpora grow in fuzz/corpus/<target> (not committed);
# crashes land in fuzz/artifacts/<target>. Logs go to fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
mkdir -p fuzz/logs
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds+=("fuzz/seeds/$target")
    options=(-max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1)
    [ -f "fuzz/$target.dict" ] && options+=(-dict="fuzz/$target.dict")
    echo "== $target: ${seconds} s"
    if RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
        "${options[@]}" >"fuzz/logs/$target.log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "fuzz/logs/$target.log" || true
    else
        echo "!! $target stopped on a finding: see fuzz/logs/$target.log and fuzz/artifacts/$target"
        grep -E 'panicked|^SUMMARY' "fuzz/logs/$target.log" | head -3 || true
    fi
done
