#!/usr/bin/env bash
# The demo: sets up the environment, builds amfmn, synthesises a small remote-sensing set,
# builds its vocabulary and prints the dataset statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"

echo "== amfmn synth: 500 synthetic aerial scenes, 128x128"
"$amfmn" synth --out data/demo_precomp --images 500 --size 128 --seed 0
echo
echo "== amfmn vocab"
"$amfmn" vocab --data_path data/demo_precomp --splits train,test --threshold 5 --out vocab/demo_vocab.json
echo
echo "== amfmn inspect --path_opt option/demo_AMFMN.yaml"
"$amfmn" inspect --path_opt option/demo_AMFMN.yaml
