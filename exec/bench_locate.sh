#!/usr/bin/env bash
# SeLo's pipeline on one 4096x4096 synthetic scene with steps 256/512/768: crops, seconds for
# cut / sim / gnt / flt and peak memory, cold and with the scene's crop codes cached; then the
# gnt + flt stages beside the authors' Python implementation of them (generate_selo.py: a
# per-pixel division loop, min-max, uint8, cv2.medianBlur 251) on the same crop scores, as a
# ratio from this one run, and whether the two maps are equal.
# Usage: exec/bench_locate.sh [CHECKPOINT (default checkpoint/demo/0, from exec/run_demo.sh)]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"
checkpoint="${1:-checkpoint/demo/0}"
if [ ! -e "$checkpoint" ]; then
    echo "error: no checkpoint $checkpoint: run exec/run_demo.sh first, or give one" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$amfmn" synth-scenes --out "$work/data" --scenes 1 --size 4096x4096 --seed 0 > /dev/null
"$amfmn" synth-scenes --out "$work/small" --scenes 1 --size 1024x1024 --seed 0 > /dev/null
query=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["caption"])' "$work/data/annotations/anno.json")
locate() {
    /usr/bin/time -f '%M' -o "$work/$1.peak_kb" "$amfmn" locate --checkpoint "$checkpoint" --image "$2" \
        --query "$query" --out "$work/$1.png" --codes "$work/$1.codes.safetensors" --device "${DEVICE:-cpu}" --json \
        > "$work/$1.json"
}
locate small "$work/small/scenes/0.png"
locate cold "$work/data/scenes/0.png"
cp "$work/cold.codes.safetensors" "$work/warm.codes.safetensors"
locate warm "$work/data/scenes/0.png"
"$AMFMN_PYTHON" exec/bench_locate.py "$work" 4096 4096
