#!/usr/bin/env bash
# Loader benchmark: images/s of decode + train transforms on 256x256 TIFF and JPEG sets, amfmn's
# threaded loader beside PyTorch's DataLoader (PIL + torchvision), same workers, in one run.
# Usage: exec/bench_loader.sh [IMAGES=400] [BATCH=32]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
images="${1:-400}"
batch="${2:-32}"
cargo build --release --quiet
cargo bench --bench loader --no-run --quiet 2>/dev/null
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The last column is the loader's own work for a CUDA model (decoding only: the GPU transforms).
printf '%-6s %-8s %14s %14s %8s %18s\n' format workers "amfmn img/s" "PyTorch img/s" ratio "decode-only img/s"
printf '%-6s %-8s %14s %14s %8s %18s\n' ------ ------- ----------- ------------- ----- -----------------
for format in tif jpg; do
    "$amfmn" synth --out "$work/$format" --images "$((images * 5 / 4))" --size 256 --format "$format" --seed 1 >/dev/null
    for workers in 1 2; do
        ours=$(cargo bench --bench loader --quiet -- "$work/$format" "$workers" "$batch" | sed -n 's/^images_per_second=//p')
        theirs=$("$AMFMN_PYTHON" exec/bench_loader.py "$work/$format" "$workers" "$batch" | sed -n 's/^images_per_second=//p')
        decode=$(cargo bench --bench loader --quiet -- "$work/$format" "$workers" "$batch" 3 device | sed -n 's/^images_per_second=//p')
        ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2fx", a / b }')
        printf '%-6s %-8s %14s %14s %8s %18s\n' "$format" "$workers" "$ours" "$theirs" "$ratio" "$decode"
    done
done
