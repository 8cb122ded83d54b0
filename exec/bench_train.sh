#!/usr/bin/env bash
# Training-step benchmark: amfmn vs the PyTorch reference of the same model (original layout,
# torch.optim.Adam) on this machine's CPU, batch 10 and 100 at 256x256, and the text encoder
# alone; both run in this one invocation. Beside the times, the ATen operators one step dispatches
# that compute ("kernels", about a GPU's kernel launches; src/profile.rs).
# Usage: exec/bench_train.sh [STEPS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
steps="${1:-3}"
cargo bench --bench train_step --no-run --quiet 2>/dev/null
value() { sed -n "s/^$1=//p"; }
printf '%-6s %-12s %12s %14s %8s %14s %16s\n' batch part "amfmn s" "PyTorch s" ratio "amfmn kernels" "PyTorch kernels"
printf '%-6s %-12s %12s %14s %8s %14s %16s\n' ----- ---- ------- --------- ----- ------------- ---------------
for batch in 10 100; do
    ours=$(cargo bench --bench train_step --quiet -- "$batch" "$steps")
    theirs=$("$AMFMN_PYTHON" exec/bench_train_step.py "$batch" "$steps")
    for part in step text; do
        a=$(echo "$ours" | value "${part}_seconds")
        b=$(echo "$theirs" | value "${part}_seconds")
        ka=$(echo "$ours" | value "${part}_kernels")
        kb=$(echo "$theirs" | value "${part}_kernels")
        ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", a / b }')
        label=$([ "$part" = step ] && echo "train step" || echo "text encoder")
        printf '%-6s %-12s %12s %14s %8s %14s %16s\n' "$batch" "$label" "$a" "$b" "$ratio" "$ka" "$kb"
    done
done
