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
    local built
    built=$(cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench train_step --bench loader --no-run --message-format=json 2>/dev/null)
    for bench in train_step loader; do
        grep "\"kind\":\[\"bench\"\],\"crate_types\":\[\"bin\"\],\"name\":\"$bench\"" <<< "$built" |
            sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
    done
}
if [ ! -d "$base/src" ]; then
    mkdir -p "$base/src.part"
    git archive "$rev" | tar -x -C "$base/src.part"
    mv "$base/src.part" "$base/src"
fi
mapfile -t B < <(build "$base/src" "$base/target")
mapfile -t H < <(build "$PWD" "${CARGO_TARGET_DIR:-$PWD/target}")
# Stops unless the build of side $1 gave three programs.
check_built() {
    local -n bins=$([ "$1" = base ] && echo B || echo H)
    local bin ok=$((${#bins[@]} == 3))
    for bin in "${bins[@]}"; do [ -x "$bin" ] || ok=0; done
    [ "$ok" = 1 ] || { echo "bench_against: building $1 ($([ "$1" = base ] && echo "$rev in $base/src" || echo "this checkout")) failed; see cargo's errors above" >&2; exit 1; }
}
check_built base
check_built this
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
# The demo's options pointed at the set (the same file for both sides).
test_options="--path_opt $PWD/option/demo_AMFMN.yaml --set dataset.data_path=$work/d/ --set dataset.image_path=$work/d/images/ \
    --set dataset.vocab_path=$work/vocab.json --set dataset.image_size=256 --set dataset.resize=278 --set dataset.batch_size_val=128"
(cd tests/reference && "$AMFMN_PYTHON" random_weights.py "$work/weights.safetensors" "$vocab_size" soft_att 512 256 >/dev/null)
export -f seconds
row "test-single 452 x 2260, 256²" s \
    "seconds \$amfmn test-single $test_options --resume $work/weights.safetensors --device cpu --save-sims $work/\$side.npy --json"
"$AMFMN_PYTHON" -c "import numpy as np,sys; a,b=np.load(sys.argv[1]),np.load(sys.argv[2]); print(f'test-single scores: max |base - this| {np.abs(a-b).max():.2e}')" \
    "$work/base.npy" "$work/this.npy"

"${H[0]}" synth --out "$work/demo" --images 400 --size 128 --seed 0 >/dev/null
"${H[0]}" vocab --data_path "$work/demo" --splits train,test --threshold 5 --out "$work/demo_vocab.json" >/dev/null
train_options="--path_opt $PWD/option/demo_AMFMN.yaml --set dataset.data_path=$work/demo/ --set dataset.image_path=$work/demo/images/ \
    --set dataset.vocab_path=$work/demo_vocab.json --set optim.epochs=1 --set logs.ckpt_save_path=$work/ckpt/ \
    --set logs.logger_name=$work/logs/ --set model.resnet_weights=none"
row "train, demo 128², 1 epoch" s \
    "rm -rf $work/ckpt $work/logs && seconds \$amfmn train $train_options --device cpu"
