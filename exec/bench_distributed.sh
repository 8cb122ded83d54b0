#!/usr/bin/env bash
# Data-parallel training over processes on this machine's CPU: the step time of 1 and 2 Gloo
# ranks at the same batch per rank, and the time each rank spends in collectives per step
# (benches/distributed.rs). Usage: exec/bench_distributed.sh [BATCH_PER_RANK=100] [STEPS=2] [SIZE=256]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo bench --bench distributed --no-run --quiet 2>/dev/null
value() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
printf '%-6s %-5s %10s %14s %12s\n' ranks rank "step s" "collectives s" "of the step"
printf '%-6s %-5s %10s %14s %12s\n' ----- ---- ------ ------------- -----------
cargo bench --bench distributed --quiet -- "${1:-100}" "${2:-2}" "${3:-256}" | while read -r line; do
    case "$line" in
        world=*)
            step=$(value "$line" step_seconds)
            spent=$(value "$line" collective_seconds)
            printf '%-6s %-5s %10s %14s %12s\n' "$(value "$line" world)" "$(value "$line" rank)" "$step" "$spent" \
                "$(awk -v a="$spent" -v b="$step" 'BEGIN { printf "%.1f %%", 100 * a / b }')"
            ;;
        *) echo "$line" ;;
    esac
done
