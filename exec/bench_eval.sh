#!/usr/bin/env bash
# Evaluation benchmark: a full RSITMD-sized test evaluation (452 images of 256x256, 2260
# captions) on this CPU, `amfmn test-single` (each image and caption encoded once, closed-form
# soft-attention scores) against the original's approach on the PyTorch reference (every
# 128x128 image/caption shard pair through the whole model, utils.shard_dis), same random
# weights, in one run; reports both times, the ratio and the largest score difference.
# Usage: exec/bench_eval.sh [ATT_TYPE=soft_att]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
att="${1:-soft_att}"
cargo build --release --quiet
amfmn="$PWD/${CARGO_TARGET_DIR:-target}/release/amfmn"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$amfmn" synth --out "$work/d" --images 2260 --size 256 --format tif --seed 3 >/dev/null
"$amfmn" vocab --data_path "$work/d" --out "$work/vocab.json" >/dev/null
vocab_size=$("$AMFMN_PYTHON" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['word2idx']))" "$work/vocab.json")
sed -e "s#'data/demo_precomp/'#'$work/d/'#" -e "s#'data/demo_precomp/images/'#'$work/d/images/'#" \
    -e "s#'vocab/demo_vocab.json'#'$work/vocab.json'#" -e "s#image_size: 128#image_size: 256#" \
    -e "s#resize: 139#resize: 278#" -e "s#batch_size_val: 64#batch_size_val: 128#" \
    -e "s#att_type: \"soft_att\"#att_type: \"$att\"#" option/demo_AMFMN.yaml > "$work/opt.yaml"
(cd tests/reference && "$AMFMN_PYTHON" random_weights.py "$work/weights.safetensors" "$vocab_size" "$att" 512 256)
start=$(date +%s.%N)
"$amfmn" test-single --path_opt "$work/opt.yaml" --resume "$work/weights.safetensors" --device cpu \
    --save-sims "$work/ours.npy" --json >/dev/null
ours=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
theirs=$(cd tests/reference && "$AMFMN_PYTHON" shard_eval.py "$work/weights.safetensors" "$work/vocab.json" \
    "$work/d" "$work/d/images" 256 128 "$att" 512 "$work/theirs.npy" | sed -n 's/^seconds=//p')
diff=$("$AMFMN_PYTHON" -c "import numpy as np,sys; a,b=np.load(sys.argv[1]),np.load(sys.argv[2]); print(f'{np.abs(a-b).max():.2e}')" "$work/ours.npy" "$work/theirs.npy")
printf '%-16s %-20s %-26s %8s %14s\n' attention "amfmn (all) s" "original shards (scores) s" ratio "max |dscore|"
printf '%-16s %-20s %-26s %8s %14s\n' "$att" "$ours" "$theirs" "$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.1fx", b / a }')" "$diff"
