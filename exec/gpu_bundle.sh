#!/usr/bin/env bash
# Everything exec/gpu_check.sh needs on a GPU machine that builds nothing, in one git-ignored
# folder at the top of the repository (default .gpu/, about 35 MB, under a 64 MiB transfer
# limit; run.sh finds the repository as its parent): stripped copies of the
# release binary, the train_step bench and the library's unit tests, NLTK's wheel (the
# reference's tokenizer, which GPU images often lack) and run.sh. On the GPU machine, from a copy
# of the repository with that folder in it:
#   bash .gpu/run.sh     # adds the wheel without a network when NLTK is missing, then gpu_check
# Usage: exec/gpu_bundle.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.gpu}"
source exec/env.sh
executable() { sed -n 's/^ *Executable .*(\(.*\))$/\1/p'; }
cargo build --release --quiet
bench=$(cargo bench --bench train_step --no-run 2>&1 | executable)
libtests=$(cargo test --release --lib --no-run 2>&1 | executable)
mkdir -p "$out/wheels"
strip -o "$out/amfmn" "$CARGO_TARGET_DIR/release/amfmn"
strip -o "$out/train_step" "$bench"
strip -o "$out/lib_tests" "$libtests"
nltk=$(echo "$AMFMN_PY_PACKAGES" | tr ' ' '\n' | grep '^nltk==')
"$AMFMN_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps "$nltk" -d "$out/wheels"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Made by exec/gpu_bundle.sh: exec/gpu_check.sh with this folder's executables.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
python="${AMFMN_PYTHON:-python3}"
if ! "$python" -c 'import nltk' 2>/dev/null; then
    "$python" -m pip install --quiet --no-index --no-deps --target "$here/py" "$here"/wheels/*.whl
    export PYTHONPATH="$here/py${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$("$python" -c 'import importlib.util as u; print(" ".join(m for m in ["nltk", "numpy", "PIL", "safetensors", "torchvision"] if not u.find_spec(m)))')
[ -z "$missing" ] || echo "gpu_bundle: $python lacks $missing: the PyTorch reference rows will fail" >&2
# On a lent machine, what the command writes under $OUT comes back: the step traces go there.
[ -z "${OUT:-}" ] || export GPU_CHECK_TRACES="${GPU_CHECK_TRACES:-$OUT/traces}"
exec bash exec/gpu_check.sh "$here/amfmn" "$here/train_step" "$here/lib_tests"
RUN
du -sh "$out" | sed 's/^/gpu_bundle: /'
