#!/usr/bin/env bash
# CPU regression check: this checkout's amfmn against an earlier revision's, interleaved on the
# same files in one run (base, this, base, this, ...), so that the machine's drift hits both.
# Rows: the loader (decode + train transforms, TIFF and JPEG, 1 and 2 workers), the training step
# at 256² (batch 10 and 100, the train_step bench), `test-single` on 452 x 2,260 at 256² (random
# weights; the two builds' scores compared), and one epoch of the demo's training. Each row is the
# median over ROUNDS of each side; "speed-up" is base over this for times, this over base for
# rates (above 1: this checkout is faster).
# The revision is exported with `git archive` and built once in its own target folder under
# ~/.cache/amfmn/against/ (a shared target folder would confuse cargo's fingerprints).
# Usage: exec/bench_against.sh REV [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
[ $# -ge 1 ] || { echo "usage: exec/bench_against.sh REV [ROUNDS=2]" >&2; exit 2; }
rev=$(git rev-parse --short "$1^{commit}")
rounds="${2:-2}"
base="$HOME/.cache/amfmn/against/$rev"

# The release binary and the two benches of the checkout in $1, built into target folder $2;
# prints their paths, one per line.
build() {
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --release --quiet)
    echo "$2/release/amfmn"
    for bench in train_step loader; do
        (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench "$bench" --no-run --message-format=json 2>/dev/null) |
            grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
    done
}
if [ ! -d "$base/src" ]; then
    mkdir -p "$base/src.part"
    git archive "$rev" | tar -x -C "$base/src.part"
    mv "$base/src.part" "$base/src"
fi
mapfile -t B < <(build "$base/src" "$base/target")
mapfile -t H < <(build "$PWD" "${CARGO_TARGET_DIR:-$PWD/target}")
for side in B H; do
    declare -n built=$side
    if [ "${#built[@]}" -ne 3 ] || ! [ -x "${built[0]}" ] || ! [ -x "${built[1]}" ] || ! [ -x "${built[2]}" ]; then
        echo "bench_against: building $([ $side = B ] && echo "$rev (in $base/src)" || echo "this checkout") failed; see cargo's errors above" >&2
        exit 1
    fi
done
declare -A dir=([base]="$base/src" [this]="$PWD")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Runs "$@" in side $1's checkout (the benches read option/ there) with side $1's binaries as
# $amfmn, $train_step and $loader, and its name as $side; prints its stdout.
as() {
    local side=$1; shift
    local -n bins=$([ "$side" = base ] && echo B || echo H)
    (cd "${dir[$side]}" && side="$side" amfmn="${bins[0]}" train_step="${bins[1]}" loader="${bins[2]}" bash -c "$*")
}
# Seconds the command takes, its output dropped (what it wrote to stderr shown if it fails, and
# the failure stops the script).
seconds() {
    local s err
    s=$(date +%s.%N)
    err=$("$@" 2>&1 >/dev/null) || { printf '%s\n' "$err" >&2; return 1; }
    awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Row: label, unit (s or img/s), then the command for one measurement, run ROUNDS times a side.
row() {
    local label=$1 unit=$2; shift 2
    local -A got=([base]="" [this]="")
    for _ in $(seq "$rounds"); do
        for side in base this; do
            local value
            value=$(as "$side" "$@")
            [ -n "$value" ] || { echo "$label: $side's run printed no figure" >&2; exit 1; }
            got[$side]+="$value"$'\n'
        done
    done
    local b t
    b=$(printf '%s' "${got[base]}" | median)
    t=$(printf '%s' "${got[this]}" | median)
    printf '%-34s %10s %10s %8s\n' "$label ($unit)" "$b" "$t" \
        "$(awk -v b="$b" -v t="$t" -v u="$unit" 'BEGIN { printf "%.2fx", u == "s" ? b / t : t / b }')"
}

printf 'base %s, this checkout %s; %s round(s) a side, medians\n' "$rev" "$(git rev-parse --short HEAD)" "$rounds"
printf '%-34s %10s %10s %8s\n' measure base this speed-up
printf '%-34s %10s %10s %8s\n' ------- ---- ---- --------
for format in tif jpg; do
    "${H[0]}" synth --out "$work/$format" --images 500 --size 256 --format "$format" --seed 1 >/dev/null
    for workers in 1 2; do
        row "loader $format, $workers worker(s)" img/s \
            "\$loader $work/$format $workers 32 3 | sed -n 's/^images_per_second=//p'"
    done
done
for batch in 10 100; do
    row "train step 256², batch $batch" s \
        "\$train_step $batch 2 cpu off 256 2>/dev/null | sed -n 's/^step_seconds=//p'"
done

"${H[0]}" synth --out "$work/d" --images 2260 --size 256 --format tif --seed 3 >/dev/null
"${H[0]}" vocab --data_path "$work/d" --out "$work/vocab.json" >/dev/null
vocab_size=$("$AMFMN_PYTHON" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['word2idx']))" "$work/vocab.json")
sed -e "s#'data/demo_precomp/'#'$work/d/'#" -e "s#'data/demo_precomp/images/'#'$work/d/images/'#" \
    -e "s#'vocab/demo_vocab.json'#'$work/vocab.json'#" -e "s#image_size: 128#image_size: 256#" \
    -e "s#resize: 139#resize: 278#" -e "s#batch_size_val: 64#batch_size_val: 128#" option/demo_AMFMN.yaml > "$work/test.yaml"
(cd tests/reference && "$AMFMN_PYTHON" random_weights.py "$work/weights.safetensors" "$vocab_size" soft_att 512 256 >/dev/null)
export -f seconds
row "test-single 452 x 2260, 256²" s \
    "seconds \$amfmn test-single --path_opt $work/test.yaml --resume $work/weights.safetensors --device cpu --save-sims $work/\$side.npy --json"
"$AMFMN_PYTHON" -c "import numpy as np,sys; a,b=np.load(sys.argv[1]),np.load(sys.argv[2]); print(f'test-single scores: max |base - this| {np.abs(a-b).max():.2e}')" \
    "$work/base.npy" "$work/this.npy"

"${H[0]}" synth --out "$work/demo" --images 400 --size 128 --seed 0 >/dev/null
"${H[0]}" vocab --data_path "$work/demo" --splits train,test --threshold 5 --out "$work/demo_vocab.json" >/dev/null
sed -e "s#'data/demo_precomp/'#'$work/demo/'#" -e "s#'data/demo_precomp/images/'#'$work/demo/images/'#" \
    -e "s#'vocab/demo_vocab.json'#'$work/demo_vocab.json'#" -e "s#epochs: 4#epochs: 1#" \
    -e "s#ckpt_save_path: \"checkpoint/\"#ckpt_save_path: \"$work/ckpt/\"#" \
    -e "s#logger_name: 'logs/demo/'#logger_name: '$work/logs/'#" option/demo_AMFMN.yaml > "$work/train.yaml"
row "train, demo 128², 1 epoch" s \
    "rm -rf $work/ckpt $work/logs && seconds \$amfmn train --path_opt $work/train.yaml --device cpu --set model.resnet_weights=none"
