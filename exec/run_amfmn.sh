#!/usr/bin/env bash
# Trains then tests AMFMN on a real dataset, like the original exec/run_amfmn_<dataset>.sh.
#
# Usage: [CARD=0] exec/run_amfmn.sh rsitmd|rsicd [--set key=value]... [--device D] [--threads N] [train flags]
#
# option/<DATASET>_AMFMN.yaml (with the --set overrides) says where the captions, images and
# vocabulary are; the vocabulary is built there when missing, then `inspect` checks every caption
# file and image before training. --set, --device and --threads reach both `train` and `test`;
# the other arguments (--resume, --overwrite) only `train`. CARD, when given, sets
# CUDA_VISIBLE_DEVICES; otherwise the scheduler's setting (or none) is kept. A training that fails
# or is stopped with Ctrl-C (exit 130) ends the script before `test`. AMFMN=/path/to/amfmn runs
# that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: [CARD=0] exec/run_amfmn.sh rsitmd|rsicd [--set key=value]... [--device D] [train flags]"
name="${1:?$usage}"
shift
case "$name" in
    rsitmd | rsicd) ;;
    *) echo "error: unknown dataset '$name'; $usage" >&2; exit 2 ;;
esac
upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
opt="option/${upper}_AMFMN.yaml"
if [ -n "${CARD:-}" ]; then
    export CUDA_VISIBLE_DEVICES="$CARD"
fi

# The flags `test` shares with `train`, in order.
args=("$@")
shared=()
i=0
while [ "$i" -lt "${#args[@]}" ]; do
    case "${args[$i]}" in
        --set | --device | --threads)
            if [ $((i + 1)) -ge "${#args[@]}" ]; then
                echo "error: ${args[$i]} needs a value; $usage" >&2
                exit 2
            fi
            shared+=("${args[$i]}" "${args[$((i + 1))]}")
            i=$((i + 2))
            ;;
        --set=* | --device=* | --threads=*) shared+=("${args[$i]}"); i=$((i + 1)) ;;
        *) i=$((i + 1)) ;;
    esac
done
sets=()
for ((j = 0; j < ${#shared[@]}; j++)); do
    case "${shared[$j]}" in
        --set) sets+=("--set" "${shared[$((j + 1))]}"); j=$((j + 1)) ;;
        --set=*) sets+=("${shared[$j]}") ;;
        --device | --threads) j=$((j + 1)) ;;
    esac
done

if [ -n "${AMFMN:-}" ]; then
    amfmn="$AMFMN" # a binary built elsewhere
else
    source exec/env.sh
    cargo build --release --quiet
    amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"
fi
"$amfmn" vocab --path_opt "$opt" ${sets[@]+"${sets[@]}"} --splits train,test --threshold 5 --if-missing
"$amfmn" inspect --path_opt "$opt" ${sets[@]+"${sets[@]}"}
"$amfmn" train --path_opt "$opt" "$@"
"$amfmn" test --path_opt "$opt" ${shared[@]+"${shared[@]}"}
