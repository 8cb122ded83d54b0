#!/usr/bin/env bash
# The GPU figures of amfmn, side by side with the PyTorch reference, on a machine with a GPU.
# Builds nothing there: it runs the release binary and the train_step bench executable it is
# given against the machine's own PyTorch (its libtorch must be 2.11, which tch 0.24 links), and
# the PyTorch reference of tests/reference on the same device. Every row is printed as soon as it
# is measured, so a run stopped by a time limit still reports what it did:
#   1. the device, and the device paths' unit tests run there (the batched training transforms,
#      the loader's device batches, locate's crops: equal to the host's bit for bit; the CUDA-event
#      clock; training in a process group of one, NCCL's, like a process alone);
#   2. score parity: amfmn test-single against the original's shard evaluation on the reference,
#      same random weights, fp32 (target: max |dscore| <= 1e-4), and both times: amfmn's whole
#      run and its model time (encoding and scoring), the original's scoring loop (target: 10x);
#   3. the training step on batches made beforehand, per precision and batch size: amfmn and
#      PyTorch (torch.optim.Adam, autocast), in ms, split into the image part (CNN + MVSA,
#      forward and backward), the text part and Adam, with images/s and amfmn's ratio, and
#      amfmn's steps queued back to back as `train` queues them, with the share of their time
#      the host waited for the device (which side is the bottleneck); amfmn's step through CUDA
#      graphs too (`graphs` rows: the train_step bench with AMFMN_CUDA_GRAPHS=1), in fp32 and bf16
#      (fp32 alone where the CPU emulates bf16); then, at
#      the training batch in fp32 and bf16, where one step's GPU time goes: both sides' kernels by
#      kind and the GPU's busy share of the step, from libtorch's profiler (exec/trace_summary.py;
#      GPU_CHECK_TRACES=<folder> keeps those Chrome traces there, gzipped, for Perfetto or
#      exec/trace_summary.py);
#   4. `train` (decoding included), per precision and in fp32 with `cuda_graphs: True`: the first
#      epoch's and the steady state's images/s (the epochs after the first), the steady state's
#      wait% (target <= 2) and its share of the step's rate at the same batch (target >= 90 %;
#      the graphs' row against the graphed step's rate); with several GPUs, data-parallel too,
#      in one process and as one process per GPU under torchrun (NCCL);
#   5. inference with the last trained checkpoint: index (images/s over the synthetic set, with
#      and without the command's start-up: loading the model, CUDA's initialisation) and
#      locate (crops/s of its scoring stage on one large scene);
#   6. the targets together: each one's measured value, goal and whether it is met.
# Usage: exec/gpu_check.sh [AMFMN_BINARY [TRAIN_STEP_BENCH [LIB_TESTS]]]   (AMFMN_PYTHON: a Python
# with torch; default python3). TRAIN_STEP_BENCH is the executable `cargo bench --bench train_step
# --no-run` prints (run from the repository root); without it section 3 has the PyTorch rows only.
# LIB_TESTS is the executable `cargo test --release --lib --no-run` prints; without it section 1
# names the device only.
# Each part (a side's step rows, a train row, index, locate, ...) that fails says so in one line
# and the check goes on; it exits non-zero at the end if any part stopped.
# GPU_CHECK_DEVICE=cpu runs every step on the CPU at a small size, two CPU replicas and two Gloo
# ranks standing for two GPUs (bf16 smaller still where the CPU emulates it): CI runs it so that
# the script cannot rot.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
amfmn="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/amfmn}")"
python="${AMFMN_PYTHON:-python3}"
device="${GPU_CHECK_DEVICE:-cuda}"
[ -x "$amfmn" ] || { echo "gpu_check: no amfmn binary at $amfmn (give its path)"; exit 1; }
bench="${2:+$(realpath "$2")}"
[ -z "$bench" ] || [ -x "$bench" ] || { echo "gpu_check: no train_step bench binary at $bench"; exit 1; }
libtests="${3:+$(realpath "$3")}"
[ -z "$libtests" ] || [ -x "$libtests" ] || { echo "gpu_check: no library test binary at $libtests"; exit 1; }
torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) ||
    { echo "gpu_check: $python has no torch (set AMFMN_PYTHON to a Python with PyTorch 2.11)"; exit 1; }
export LD_LIBRARY_PATH="$torch_dir/lib:${LD_LIBRARY_PATH:-}"
# Kineto's start-up complaints (no GPU on a dry run) are not ours to print.
export KINETO_LOG_LEVEL="${KINETO_LOG_LEVEL:-5}"
if [ "$device" = cuda ]; then
    "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
        { echo "gpu_check: no CUDA GPU visible to PyTorch on this machine: nothing to measure"; exit 1; }
    images=2260 size=256 batch=100 batches=32,100,256 steps=10 epochs=3 scene=4096
    workers=$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))
    amps="off bf16 fp16"
    gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
    all=$(seq -s, -f 'cuda:%g' 0 $((gpus - 1)))
else
    images=100 size=64 batch=10 batches=4,10 steps=2 epochs=2 scene=1024 workers=2
    amps="off bf16"
    gpus=2 all=cpu,cpu
    # Without bf16 instructions (AVX-512 BF16, AMX) the CPU emulates bf16, some 25x slower than
    # fp32: the dry run then takes its bf16 steps at the small batch only and trains bf16 on 10
    # images (about 3 minutes in all, against some 12 at the full dry-run size).
    grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo || emulated_bf16=1
fi
# The step rows' batch sizes at AMP.
# The precisions whose step also runs through CUDA graphs.
graphed_amps=$([ -n "${emulated_bf16:-}" ] && echo off || echo "off bf16")
batches_at() { if [ "$1" = bf16 ] && [ -n "${emulated_bf16:-}" ]; then echo "${batches%%,*}"; else echo "$batches"; fi; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -c "import torch; d = torch.cuda.get_device_properties(0) if '$device' == 'cuda' else None; \
print(f'device: {d.name}, {d.total_memory / 2**30:.0f} GiB, torch {torch.__version__}' if d else f'device: cpu, torch {torch.__version__}')"
if [ -n "$libtests" ]; then
    # A failing test prints its assertion; the run goes on to the figures. One of them trains in
    # a process group of one, NCCL's on a GPU, bootstrapped over the loopback interface. One at a
    # time: the CUDA graphs' test checks dropout masks of the generator the others draw from.
    AMFMN_TEST_DEVICE="$device" NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-lo}" "$libtests" on_device --test-threads=1 2>&1 |
        grep -E '^test |panicked|^test result' |
        sed 's/^/device paths: /' || true
fi

"$amfmn" synth --out "$work/d" --images "$images" --size "$size" --format tif --seed 3 >/dev/null
"$amfmn" vocab --data_path "$work/d" --out "$work/vocab.json" >/dev/null
vocab_size=$("$python" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['word2idx']))" "$work/vocab.json")
sed -e "s#'data/demo_precomp/'#'$work/d/'#" -e "s#'data/demo_precomp/images/'#'$work/d/images/'#" \
    -e "s#'vocab/demo_vocab.json'#'$work/vocab.json'#" -e "s#image_size: 128#image_size: $size#" \
    -e "s#resize: 139#resize: $((size * 278 / 256))#" -e "s#batch_size: 32#batch_size: $batch#" \
    -e "s#batch_size_val: 64#batch_size_val: 128#" -e "s#epochs: 4#epochs: $epochs#" -e "s#workers: 2#workers: $workers#" \
    -e "s#ckpt_save_path: \"checkpoint/\"#ckpt_save_path: \"$work/ckpt/\"#" -e "s#logger_name: 'logs/demo/'#logger_name: '$work/logs/'#" \
    option/demo_AMFMN.yaml > "$work/opt.yaml"
(cd tests/reference && "$python" random_weights.py "$work/weights.safetensors" "$vocab_size" soft_att 512 "$size")

# The most GPU memory in use while a command runs (nvidia-smi every 0.1 s), in MiB; the
# command's output goes to out.txt.
peak() {
    if [ "$device" != cuda ]; then "$@" > "$work/out.txt"; echo "-"; return; fi
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; sleep 0.1; done) > "$work/mem.txt" &
    local poll=$! status=0
    "$@" > "$work/out.txt" || status=$?
    kill "$poll"; wait "$poll" 2>/dev/null || true
    sort -n "$work/mem.txt" | tail -1
    return "$status"
}
seconds() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }
# Runs a part of the check (a function and its arguments) in a subshell that stops at its first
# failing command: one line names it and the check goes on to the next part (a GPU session is
# rare; a crash of one side must not cost the other figures). The check exits non-zero at its end
# if any part stopped, so the CPU dry run in CI still fails on a broken part.
stopped=0
part() {
    local name="$1"
    shift
    ("$@") &
    wait $! || { echo "gpu_check: $name stopped (exit $?); the check goes on"; stopped=$((stopped + 1)); }
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
# The issue's targets, each noted where it is measured and printed together at the end:
# target NAME MEASURED GOAL MET. `meets V OP G` says yes, no, or - when V was not measured.
target() { printf '%-44s %-42s %-22s %s\n' "$1" "${2:--}" "$3" "$4" >> "$work/targets.txt"; }
meets() {
    awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
        if (v !~ /^[0-9.]+([eE][-+]?[0-9]+)?$/) { print "-"; exit }
        print ((op == "<=" ? v + 0 <= g + 0 : v + 0 >= g + 0) ? "yes" : "no") }'
}

parity_and_evaluation() {
    local start eval_ours model_time eval_theirs parity
    start=$(date +%s.%N)
    "$amfmn" test-single --path_opt "$work/opt.yaml" --resume "$work/weights.safetensors" --device "$device" \
        --save-sims "$work/ours.npy" --json >/dev/null 2> "$work/eval.err" || { tail -1 "$work/eval.err"; return 1; }
    eval_ours=$(seconds "$start")
    model_time=$(sed -n 's/.*model time \([0-9.]*\) s.*/\1/p' "$work/eval.err" | head -1)
    eval_theirs=$(cd tests/reference && AMFMN_REFERENCE_DEVICE="$device" "$python" shard_eval.py "$work/weights.safetensors" \
        "$work/vocab.json" "$work/d" "$work/d/images" "$size" 128 soft_att 512 "$work/theirs.npy" | sed -n 's/^seconds=//p')
    parity=$("$python" -c "import numpy as np, sys; a, b = np.load(sys.argv[1]), np.load(sys.argv[2]); print(f'{np.abs(a - b).max():.2e}')" \
        "$work/ours.npy" "$work/theirs.npy")
    echo "amfmn test-single, everything (s):        $eval_ours"
    echo "amfmn test-single, model time (s):        $(sed -n 's/.*model time //p' "$work/eval.err" | head -1)"
    echo "original's shards, scores only (s):       $eval_theirs"
    local faster
    faster=$(ratio "$eval_theirs" "$model_time")
    echo "original's shards over amfmn's model time: $faster (target >= 10x)"
    echo "max |dscore| = $parity (target <= 1e-4)"
    target "score parity: max |dscore|" "$parity" "<= 1e-4" "$(meets "$parity" "<=" 1e-4)"
    target "test: original's shards over model time" "$faster" ">= 10x" "$(meets "${faster%x}" ">=" 10)"
}
echo
echo "== 2. score parity and test evaluation ($((images / 5)) images x $images captions, fp32)"
part "score parity" parity_and_evaluation

echo
echo "== 3. training step on made batches, ${size}x${size}, 15-token captions (median of $steps), ms"
printf '%-8s %-5s %5s %9s %9s %9s %9s %9s %9s %9s %10s %8s %7s\n' who amp batch step image text adam "img/s" kernels "vs PyTorch" "16-bit" \
    queued waited
# Rows of one bench run (key=value lines, `batch=` first), printed as they arrive; kept in steps.txt.
step_rows() {
    local who="$1" amp="$2" b="" step="" image="" text="" adam="" kernels="" products="" low="" queued="" waited=""
    while IFS='=' read -r key value; do
        case "$key" in
            batch) b="$value" queued="" waited="" ;;
            back_to_back_seconds) queued=$(awk -v s="$value" 'BEGIN { printf "%.1f", s * 1000 }') ;;
            back_to_back_host_wait) waited=$(awk -v w="$value" 'BEGIN { printf "%.0f %%", w * 100 }') ;;
            step_seconds) step="$value" ;;
            step_kernels) kernels="$value" ;;
            step_products) products="$value" ;;
            step_products_16bit) low="$value" ;;
            image_seconds) image="$value" ;;
            text_seconds) text="$value" ;;
            adam_seconds) adam="$value" ;;
            adam_kernels)
                local speed base
                speed=$(awk -v n="$b" -v s="$step" 'BEGIN { printf "%.1f", n / s }')
                base=$(awk -v a="$amp" -v n="$b" '$1 == "PyTorch" && $2 == a && $3 == n { print $4 }' "$work/steps.txt")
                echo "$who $amp $b $step $image $text $adam $speed" >> "$work/steps.txt"
                printf '%-8s %-5s %5s %9.1f %9.1f %9.1f %9.1f %9s %9s %9s %10s %8s %7s\n' "$who" "$amp" "$b" \
                    "$(awk -v s="$step" 'BEGIN { print s * 1000 }')" "$(awk -v s="$image" 'BEGIN { print s * 1000 }')" \
                    "$(awk -v s="$text" 'BEGIN { print s * 1000 }')" "$(awk -v s="$adam" 'BEGIN { print s * 1000 }')" \
                    "$speed" "$kernels" "$([ "$who" != PyTorch ] && [ -n "$base" ] && ratio "$base" "$step" || echo -)" \
                    "$([ -n "$products" ] && echo "$low/$products" || echo -)" "${queued:--}" "${waited:--}"
                ;;
        esac
    done
}
touch "$work/steps.txt" "$work/targets.txt"
traced="off bf16"
# The step rows of WHO (PyTorch or amfmn) at AMP, one step of the training batch traced where asked.
bench_rows() {
    local who="$1" amp="$2" trace="" command=("$bench") graphs=0
    case " $traced " in *" $amp "*) trace="$work/trace-$who-$amp" ;; esac
    if [ "$who" = PyTorch ]; then command=("$python" exec/bench_train_step.py); fi
    if [ "$who" = graphs ]; then graphs=1 trace=""; fi
    AMFMN_CUDA_GRAPHS="$graphs" AMFMN_TRACE="$trace" AMFMN_TRACE_BATCH="$batch" \
        "${command[@]}" "$(batches_at "$amp")" "$steps" "$device" "$amp" "$size" | step_rows "$who" "$amp"
}
for amp in $amps; do
    part "PyTorch's $amp step" bench_rows PyTorch "$amp"
    [ -z "$bench" ] || part "amfmn's $amp step" bench_rows amfmn "$amp"
    case " $graphed_amps " in *" $amp "*) [ -z "$bench" ] || part "amfmn's $amp step in CUDA graphs" bench_rows graphs "$amp" ;; esac
done
echo "(vs PyTorch: its step time over amfmn's; target at batch 100 fp32 >= 2.00x. kernels: the ATen"
echo " operators one step dispatches that compute, about its kernel launches; counted alike on both sides."
echo " 16-bit: amfmn's matrix-product and convolution kernels on 16-bit inputs, of all of them."
echo " queued: amfmn's ms per step when steps are queued back to back, as train queues them (each"
echo " loss read once the next step is queued); waited: the share of that time the host waited for"
echo " the device: near 100 % the GPU is the bottleneck, near 0 % the host's launches are;"
echo " graphs: amfmn's step through CUDA graphs, cuda_graphs: True; on the CPU the same copies, no graph)"
# The step targets from the rows above: WHO's fp32 step at the training batch over PyTorch's, and
# its bf16 images/s over its fp32 ones at the largest batch.
step_of() { awk -v w="$1" -v a="$2" -v n="$3" -v c="$4" '$1 == w && $2 == a && $3 == n { print $c }' "$work/steps.txt"; }
largest="${batches##*,}"
for who in amfmn graphs; do
    over=$(ratio "$(step_of "$who" off "$batch" 4)" "$(step_of PyTorch off "$batch" 4)")
    target "$who step, batch $batch, fp32, over PyTorch's" "$over" "<= 0.50x" "$(meets "${over%x}" "<=" 0.5)"
    gain=$(ratio "$(step_of "$who" bf16 "$largest" 8)" "$(step_of "$who" off "$largest" 8)")
    target "$who bf16 over fp32 images/s, batch $largest" "$gain" ">= 1.50x" "$(meets "${gain%x}" ">=" 1.5)"
done
for amp in $traced; do
    echo
    echo "-- where one step's GPU time goes: batch $batch, amp $amp (libtorch's profiler, one traced step)"
    sides=()
    for who in amfmn PyTorch; do
        [ ! -f "$work/trace-$who-$amp-$batch.json" ] || sides+=("$who=$work/trace-$who-$amp-$batch.json")
    done
    if [ ${#sides[@]} -eq 0 ]; then echo "(no step traced at this batch)"; continue; fi
    part "the $amp trace summary" "$python" exec/trace_summary.py "${sides[@]}" --top 8
done
if [ -n "${GPU_CHECK_TRACES:-}" ] && mkdir -p "$GPU_CHECK_TRACES"; then
    for kept in "$work"/trace-*-"$batch".json; do
        [ ! -f "$kept" ] || gzip -c "$kept" > "$GPU_CHECK_TRACES/$(basename "$kept").gz"
    done
    echo "(the traces, gzipped: $GPU_CHECK_TRACES)"
fi

echo
echo "== 4. amfmn train, batch $batch, decoding included ($workers loader workers, $epochs epochs)"
printf '%-24s %12s %13s %9s %16s %14s\n' run "first img/s" "steady img/s" "wait%" "of step rate" "peak GPU MiB"
# What starts amfmn train: nothing (one process), or torchrun (one process per GPU).
launcher=()
# amfmn train on DEVICES at AMP, named NAME, with more --set KEY=VALUE: one row.
train_row() {
    rm -rf "$work/ckpt" "$work/logs"
    local mem sets=() b="$batch"
    for set in "${@:4}"; do
        sets+=(--set "$set")
        case "$set" in dataset.batch_size=*) b="${set#*=}" ;; esac
    done
    # The dry run's CUDA-graphs row warns that the CPU has none; the table is no place for that line.
    mem=$(peak "${launcher[@]}" "$amfmn" train --path_opt "$work/opt.yaml" --device "$1" --set model.resnet_weights=none \
        --set "optim.amp=$2" "${sets[@]}" 2> >(grep -v '^warning: cuda_graphs: True on the CPU' >&2))
    local first steady waiting made
    first=$(awk 'NF == 15 && $1 == "0" && $2 == "1" { print $5; exit }' "$work/out.txt")
    steady=$(awk 'NF == 15 && $1 == "0" && $2 > 1 && $5 + 0 > 0 { s += $5; n++ } END { if (n) printf "%.1f", s / n; else print "-" }' "$work/out.txt")
    waiting=$(awk 'NF == 15 && $1 == "0" && $2 > 1 && $5 + 0 > 0 { if ($6 > w) w = $6 } END { printf "%.1f", w }' "$work/out.txt")
    made=$(awk -v w="${made_by:-amfmn}" -v a="$2" -v n="$b" '$1 == w && $2 == a && $3 == n { print $8 }' "$work/steps.txt")
    local share warm
    share=$(awk -v s="$steady" -v m="$made" 'BEGIN { if (m > 0 && s > 0) printf "%.0f", 100 * s / m }')
    warm=$(awk -v f="$first" -v s="$steady" 'BEGIN { if (f > 0 && s > 0) printf "%.0f", 100 * f / s }')
    printf '%-24s %12s %13s %9s %16s %14s\n' "$3" "$first" "$steady" "$waiting" "${share:+$share %}" "$mem"
    local all_met verdicts
    verdicts="$(meets "$share" ">=" 90) $(meets "$waiting" "<=" 2) $(meets "$warm" ">=" 70)"
    case " $verdicts " in *" no "*) all_met=no ;; *" - "*) all_met=- ;; *) all_met=yes ;; esac
    target "train $3" "${share:--} % of step, wait ${waiting:--} %, first ${warm:--} %" ">= 90 %, <= 2 %, >= 70 %" "$all_met"
}
for amp in $amps; do
    if [ "$amp" = bf16 ] && [ -n "${emulated_bf16:-}" ]; then
        "$amfmn" synth --out "$work/small" --images 10 --size "$size" --format tif --seed 3 >/dev/null
        small=$(batches_at bf16)
        part "train at $amp" train_row "$device" "$amp" "$amp, 10 images, batch $small" \
            "dataset.data_path=$work/small/" "dataset.image_path=$work/small/images/" "dataset.batch_size=$small"
        continue
    fi
    part "train at $amp" train_row "$device" "$amp" "$amp"
done
made_by=graphs part "train in CUDA graphs" train_row "$device" off "off, CUDA graphs" cuda_graphs=True
if [ "$gpus" -ge 2 ]; then
    part "data-parallel train" train_row "$all" off "off, $gpus devices"
    # One process per GPU under torchrun, each on its local rank's GPU: NCCL on GPUs, Gloo on
    # the dry run's CPU.
    backend=$([ "$device" = cuda ] && echo NCCL || echo Gloo)
    launcher=(env GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=$(( $(nproc) / gpus > 1 ? $(nproc) / gpus : 1 ))
        "$python" -m torch.distributed.run --standalone --nproc-per-node "$gpus" --no-python)
    part "torchrun train" train_row "$device" off "off, $gpus ranks ($backend)"
    launcher=()
fi
echo "(targets: wait% <= 2, steady >= 90 % of the step rate, first >= 70 % of steady)"
echo
echo "== 5. inference, with the last trained checkpoint"
index_rate() {
    local start index_s encoding
    start=$(date +%s.%N)
    "$amfmn" index --checkpoint "$work/ckpt/demo/0" --images "$work/d/images" --out "$work/images.index" \
        --device "$device" --workers "$workers" > "$work/index.txt"
    index_s=$(seconds "$start")
    encoding=$(awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "encoded/s") c = i } NR == 3 && c { print $c }' "$work/index.txt")
    echo "index: $images images in $index_s s with start-up: $(awk -v n="$images" -v s="$index_s" 'BEGIN { printf "%.0f", n / s }') images/s;" \
        "encoding alone: ${encoding:-?} images/s (target >= 5000 on 16 cores)"
    target "index: images/s encoding ($(nproc) cores)" "$encoding" ">= 5000" "$(meets "$encoding" ">=" 5000)"
}
locate_rate() {
    "$amfmn" synth-scenes --out "$work/scenes" --scenes 1 --size "${scene}x${scene}" --seed 1 >/dev/null
    "$amfmn" locate --checkpoint "$work/ckpt/demo/0" --image "$work/scenes/scenes/0.png" \
        --query "a baseball field next to houses" --out "$work/overlay.png" --device "$device" --json > "$work/locate.json"
    # One read of the report: the scoring time, then the row.
    local sim row
    { read -r sim; read -r row; } < <("$python" -c "import json, sys; r = json.load(open(sys.argv[1])); s, c = r['seconds']['sim'], r['seconds']['cut']; \
    print(f'{s:.3f}'); print(f\"locate: {r['crops']} crops of a ${scene}x${scene} scene cut in {c:.2f} s, scored in {s:.2f} s: {r['crops'] / s:.0f} crops/s (target: 4096x4096 <= 0.2 s)\")" \
        "$work/locate.json")
    echo "$row"
    target "locate: ${scene}x${scene} scene scored, s" "$sim" "<= 0.2 (4096²)" "$(meets "$sim" "<=" 0.2)"
}
part "index" index_rate
part "locate" locate_rate
echo
echo "== 6. the targets, as measured above$([ "$device" = cuda ] || echo " (a dry run: CPU figures, not the targets' H200)")"
printf '%-44s %-42s %-22s %s\n' target measured goal met
cat "$work/targets.txt"
echo "(train rows: the steady state's images/s over the step's rate, its wait%, the first epoch's images/s"
echo " over the steady state's)"
[ "$stopped" -eq 0 ] || { echo "gpu_check: $stopped part(s) stopped (above)"; exit 1; }
