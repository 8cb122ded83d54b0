#!/usr/bin/env bash
# The CUDA figures of amfmn, on a machine with a GPU, in one table (issue 12). Builds nothing:
# it runs the release binary it is given (carry target/release/amfmn) against the machine's own
# PyTorch (its libtorch must be 2.11, which tch 0.24 links against), and the PyTorch reference of
# tests/reference on the same GPU. Takes a few minutes on one GPU:
#   - the device (name, memory);
#   - score parity: amfmn test-single vs the original's shard evaluation on the reference, same
#     random weights, fp32 on the GPU (target: max |dscore| <= 1e-4);
#   - an RSITMD-sized test evaluation (452 images, 2260 captions, 256x256): amfmn and the
#     original's shards, seconds;
#   - training at batch 100, 256x256: amfmn `train` (decoding included) in fp32, bf16 and fp16,
#     and the reference's step on pre-made batches in fp32, bf16 and fp16 autocast, as images/s
#     and peak memory; the share of amfmn's epoch spent waiting for the loader (its `wait%`,
#     target <= 5 %); fp32 in channels-last and bf16 in NCHW (the layouts `channels_last: auto`
#     does not pick); with the train_step bench binary, amfmn's step on pre-made batches too; on
#     a machine with several GPUs, amfmn data-parallel on all of them.
# Usage: exec/gpu_check.sh [AMFMN_BINARY [TRAIN_STEP_BENCH]]   (AMFMN_PYTHON: a Python with torch;
# default python3). TRAIN_STEP_BENCH is the executable `cargo bench --bench train_step --no-run`
# prints (run from the repository root). GPU_CHECK_DEVICE=cpu runs the same steps on the CPU at
# a small size, two CPU replicas standing for two GPUs (to check the script).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
amfmn="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/amfmn}")"
python="${AMFMN_PYTHON:-python3}"
device="${GPU_CHECK_DEVICE:-cuda}"
[ -x "$amfmn" ] || { echo "gpu_check: no amfmn binary at $amfmn (give its path)"; exit 1; }
bench="${2:+$(realpath "$2")}"
[ -z "$bench" ] || [ -x "$bench" ] || { echo "gpu_check: no train_step bench binary at $bench"; exit 1; }
torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) ||
    { echo "gpu_check: $python has no torch (set AMFMN_PYTHON to a Python with PyTorch 2.11)"; exit 1; }
export LD_LIBRARY_PATH="$torch_dir/lib:${LD_LIBRARY_PATH:-}"
if [ "$device" = cuda ]; then
    "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
        { echo "gpu_check: no CUDA GPU visible to PyTorch on this machine: nothing to measure"; exit 1; }
    images=2260 size=256 batch=100 steps=12 workers=$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))
    gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
    all=$(seq -s, -f 'cuda:%g' 0 $((gpus - 1)))
else
    images=200 size=64 batch=10 steps=3 workers=2
    gpus=2 all=cpu,cpu
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -c "import torch; d = torch.cuda.get_device_properties(0) if '$device' == 'cuda' else None; \
print(f'device: {d.name}, {d.total_memory / 2**30:.0f} GiB, torch {torch.__version__}' if d else f'device: cpu, torch {torch.__version__}')"

"$amfmn" synth --out "$work/d" --images "$images" --size "$size" --format tif --seed 3 >/dev/null
"$amfmn" vocab --data_path "$work/d" --out "$work/vocab.json" >/dev/null
vocab_size=$("$python" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['word2idx']))" "$work/vocab.json")
sed -e "s#'data/demo_precomp/'#'$work/d/'#" -e "s#'data/demo_precomp/images/'#'$work/d/images/'#" \
    -e "s#'vocab/demo_vocab.json'#'$work/vocab.json'#" -e "s#image_size: 128#image_size: $size#" \
    -e "s#resize: 139#resize: $((size * 278 / 256))#" -e "s#batch_size: 32#batch_size: $batch#" \
    -e "s#batch_size_val: 64#batch_size_val: 128#" -e "s#epochs: 4#epochs: 1#" -e "s#workers: 2#workers: $workers#" \
    -e "s#ckpt_save_path: \"checkpoint/\"#ckpt_save_path: \"$work/ckpt/\"#" -e "s#logger_name: 'logs/demo/'#logger_name: '$work/logs/'#" \
    option/demo_AMFMN.yaml > "$work/opt.yaml"
(cd tests/reference && "$python" random_weights.py "$work/weights.safetensors" "$vocab_size" soft_att 512 "$size")

# The most GPU memory in use while a command runs (nvidia-smi every 0.1 s), in MiB.
peak() {
    if [ "$device" != cuda ]; then "$@" > "$work/out.txt"; echo "-"; return; fi
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; sleep 0.1; done) > "$work/mem.txt" &
    local poll=$!
    "$@" > "$work/out.txt"
    kill "$poll"; wait "$poll" 2>/dev/null || true
    sort -n "$work/mem.txt" | tail -1
}
seconds() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

start=$(date +%s.%N)
"$amfmn" test-single --path_opt "$work/opt.yaml" --resume "$work/weights.safetensors" --device "$device" \
    --save-sims "$work/ours.npy" --json >/dev/null
eval_ours=$(seconds "$start")
eval_theirs=$(cd tests/reference && AMFMN_REFERENCE_DEVICE="$device" "$python" shard_eval.py "$work/weights.safetensors" \
    "$work/vocab.json" "$work/d" "$work/d/images" "$size" 128 soft_att 512 "$work/theirs.npy" | sed -n 's/^seconds=//p')
parity=$("$python" -c "import numpy as np, sys; a, b = np.load(sys.argv[1]), np.load(sys.argv[2]); print(f'{np.abs(a - b).max():.2e}')" \
    "$work/ours.npy" "$work/theirs.npy")

# amfmn train on DEVICES at AMP, named NAME, with more --set KEY=VALUE: a table row (images/s of
# the first epoch, peak memory); its wait% goes to waiting.txt.
train_row() {
    rm -rf "$work/ckpt" "$work/logs"
    local mem sets=()
    for set in "${@:4}"; do sets+=(--set "$set"); done
    mem=$(peak "$amfmn" train --path_opt "$work/opt.yaml" --device "$1" --set model.resnet_weights=none \
        --set "optim.amp=$2" "${sets[@]}")
    echo "$3|$(awk '$1 == "0" && $2 == "1" { print $5; exit }' "$work/out.txt")|$mem"
    awk -v name="$3" '$1 == "0" && $2 == "1" { print name "|" $6; exit }' "$work/out.txt" >> "$work/waiting.txt"
}
# amfmn's step on pre-made batches (the bench binary) on DEVICES at AMP: a table row.
step_row() {
    local mem step
    mem=$(peak "$bench" "$batch" "$steps" "$1" "$2" "$size")
    step=$(sed -n 's/^step_seconds=//p' "$work/out.txt")
    echo "$3|$(awk -v b="$batch" -v s="$step" 'BEGIN { printf "%.1f", b / s }')|$mem"
}

rows=()
for amp in off bf16 fp16; do
    if [ "$device" != cuda ] && [ "$amp" = fp16 ]; then continue; fi
    rows+=("$(train_row "$device" "$amp" "amfmn train ($amp)")")
    [ -z "$bench" ] || rows+=("$(step_row "$device" "$amp" "amfmn step, made batches ($amp)")")
done
if [ "$device" = cuda ]; then
    # channels_last: auto is NCHW in fp32 and NHWC with AMP on CUDA; the other layout of each.
    rows+=("$(train_row cuda off "amfmn train (off, NHWC)" channels_last=on)")
    rows+=("$(train_row cuda bf16 "amfmn train (bf16, NCHW)" channels_last=off)")
fi
if [ "$gpus" -ge 2 ]; then
    for amp in off bf16; do
        rows+=("$(train_row "$all" "$amp" "amfmn train ($amp, $gpus devices)")")
        [ -z "$bench" ] || rows+=("$(step_row "$all" "$amp" "amfmn step, made ($amp, $gpus dev.)")")
    done
fi
for amp in off bf16 fp16; do
    if [ "$device" != cuda ] && [ "$amp" = fp16 ]; then continue; fi
    out=$("$python" exec/bench_train_step.py "$batch" "$steps" "$device" "$amp")
    step=$(echo "$out" | sed -n 's/^step_seconds=//p')
    mem=$(echo "$out" | sed -n 's/^peak_mb=//p')
    rows+=("PyTorch step ($amp)|$(awk -v b="$batch" -v s="$step" 'BEGIN { printf "%.1f", b / s }')|${mem:--}")
done

echo
printf '%-36s %10s %14s\n' "training, batch $batch, ${size}px" "images/s" "peak GPU MiB"
printf '%-36s %10s %14s\n' "------------------------------------" "--------" "------------"
for row in "${rows[@]}"; do
    IFS='|' read -r name speed mem <<< "$row"
    printf '%-36s %10s %14s\n' "$name" "$speed" "$mem"
done
base=$(printf '%s\n' "${rows[@]}" | awk -F'|' '$1 == "PyTorch step (off)" { print $2 }')
for row in "${rows[@]}"; do
    IFS='|' read -r name speed _ <<< "$row"
    printf '%-56s %8sx\n' "  vs PyTorch fp32: $name" "$(awk -v a="$speed" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
done
while IFS='|' read -r name waiting; do
    printf '%-56s %8s%%\n' "  waiting for batches: $name" "$waiting"
done < "$work/waiting.txt"
echo "  (target: waiting <= 5 % of the epoch, $workers loader workers)"
echo
printf '%-40s %10s\n' "test evaluation ($((images / 5)) images, $images captions)" seconds
printf '%-40s %10s\n' "amfmn test-single (all, decoding too)" "$eval_ours"
printf '%-40s %10s\n' "original's shards on the reference" "$eval_theirs"
echo "score parity, fp32 on $device: max |dscore| = $parity (target <= 1e-4)"
