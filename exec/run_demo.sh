#!/usr/bin/env bash
# The demo: sets up the environment, builds amfmn, synthesises a small remote-sensing set,
# builds its vocabulary, prints the dataset statistics and trains AMFMN on it on the CPU
# (4 epochs of one fold; the per-epoch table shows validation recall climbing), then
# evaluates the best checkpoint on the test split, indexes the images and searches them.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"

echo "== amfmn synth: 400 synthetic aerial scenes, 128x128"
"$amfmn" synth --out data/demo_precomp --images 400 --size 128 --seed 0
echo
echo "== amfmn vocab"
"$amfmn" vocab --data_path data/demo_precomp --splits train,test --threshold 5 --out vocab/demo_vocab.json
echo
echo "== amfmn inspect --path_opt option/demo_AMFMN.yaml"
"$amfmn" inspect --path_opt option/demo_AMFMN.yaml
echo
echo "== amfmn train --path_opt option/demo_AMFMN.yaml --device cpu"
rm -rf checkpoint/demo logs/demo
"$amfmn" train --path_opt option/demo_AMFMN.yaml --device cpu --set model.resnet_weights=none
echo
echo "== amfmn test --path_opt option/demo_AMFMN.yaml"
"$amfmn" test --path_opt option/demo_AMFMN.yaml --device cpu
echo
echo "== amfmn index + retrieve: search the images by sentence"
"$amfmn" index --checkpoint checkpoint/demo/0 --images data/demo_precomp/images --out checkpoint/demo/images.index --device cpu
"$amfmn" retrieve --index checkpoint/demo/images.index --query "two white houses next to a baseball field" --top 5 \
    --html checkpoint/demo/search.html
echo "(thumbnails of these results: checkpoint/demo/search.html)"
