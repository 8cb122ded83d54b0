#!/usr/bin/env bash
# Trains then tests AMFMN on a real dataset, like the original exec/run_amfmn_<dataset>.sh.
# Usage: CARD=0 exec/run_amfmn.sh rsitmd|rsicd [extra `amfmn train` arguments]
# CARD picks the GPU (CUDA_VISIBLE_DEVICES); without a GPU amfmn runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: exec/run_amfmn.sh rsitmd|rsicd [train arguments]}"
shift
upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
opt="option/${upper}_AMFMN.yaml"
data="data/${name}_precomp"
export CUDA_VISIBLE_DEVICES="${CARD:-0}"

for f in train_caps.txt train_filename.txt test_caps.txt test_filename.txt; do
    if [ ! -f "$data/$f" ]; then
        echo "error: $data/$f is missing; put the $upper caption and file-name files of the original release in $data/" >&2
        exit 1
    fi
done
if [ -z "$(ls -A "$data/images" 2>/dev/null)" ]; then
    echo "error: no images in $data/images/; put the $upper images there (dataset.image_path of $opt)" >&2
    exit 1
fi

source exec/env.sh
cargo build --release --quiet
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"
vocab="vocab/${name}_splits_vocab.json"
[ -f "$vocab" ] || "$amfmn" vocab --data_path "$data" --splits train,test --threshold 5 --out "$vocab"
"$amfmn" inspect --path_opt "$opt"
"$amfmn" train --path_opt "$opt" "$@"
"$amfmn" test --path_opt "$opt"
