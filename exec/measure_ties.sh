#!/usr/bin/env bash
# What the tie rule changes on RSICD-like duplicate captions: the original's metrics (NumPy's
# unstable argsort, reversed) beside amfmn's `metrics` on the same score matrices.
# Usage: exec/measure_ties.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$AMFMN_PYTHON" exec/measure_ties.py "${CARGO_TARGET_DIR:-target}/release/amfmn" "$work"
