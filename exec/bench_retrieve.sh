#!/usr/bin/env bash
# Retrieval latency: one sentence query (encode + score every image + top 10) over 10k and 100k
# indexed images with synthetic soft-attention codes on this CPU; median of 20 queries.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo bench --bench retrieve --no-run --quiet 2>/dev/null
printf '%-10s %14s %16s %12s\n' images "ms per query" "of which encode" "memory MB"
printf '%-10s %14s %16s %12s\n' ------ ------------ --------------- ---------
for n in 10000 100000; do
    out=$(cargo bench --bench retrieve --quiet -- "$n" 20)
    value() { echo "$out" | sed -n "s/^$1=//p"; }
    printf '%-10s %14s %16s %12s\n' "$n" "$(value ms_per_query)" "$(value encode_ms)" "$(value memory_mb)"
done
