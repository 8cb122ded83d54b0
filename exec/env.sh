# Sourced by the exec/ scripts and .ci/run: one place that says where the PyTorch environment
# (libtorch for the build, NLTK/NumPy/PyTorch for the reference tests and benchmarks) lives and
# installs it on first use.
#
#   AMFMN_TORCH_ENV  virtual environment folder (default: $HOME/.cache/amfmn/torch-2.11.0)
#   LIBTORCH         a libtorch 2.11.0 folder of your own; when set, the build uses it
#   CARGO_TARGET_DIR reused as usual when set

AMFMN_TORCH_VERSION=2.11.0
AMFMN_TORCH_ENV="${AMFMN_TORCH_ENV:-$HOME/.cache/amfmn/torch-$AMFMN_TORCH_VERSION}"
AMFMN_PYTHON="$AMFMN_TORCH_ENV/bin/python"
export AMFMN_TORCH_ENV AMFMN_PYTHON

# Python packages of the environment, pinned so the tests compare against fixed references. The
# two nvidia-cuda wheels are headers only (the CUDA compiler configuration and libcu++ that
# c10d's ProcessGroupNCCL.hpp includes), so that the shim can build NCCL's process group.
AMFMN_PY_PACKAGES="torch==$AMFMN_TORCH_VERSION torchvision==0.26.0 numpy==2.4.6 nltk==3.10.4 \
pillow==13.0.0 safetensors==0.8.0 tensorboard==2.21.0 \
opencv-python-headless==5.0.0.93 scipy==1.17.1 scikit-image==0.26.0 \
nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"

amfmn_setup_python() {
    local stamp="$AMFMN_TORCH_ENV/.amfmn-packages"
    if [ -x "$AMFMN_PYTHON" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$AMFMN_PY_PACKAGES" ]; then
        return 0
    fi
    echo "amfmn: installing the PyTorch environment into $AMFMN_TORCH_ENV (about 5 GB, once)" >&2
    command -v python3 >/dev/null || { echo "amfmn: python3 is required to install libtorch" >&2; return 1; }
    mkdir -p "$(dirname "$AMFMN_TORCH_ENV")"
    [ -x "$AMFMN_PYTHON" ] || python3 -m venv "$AMFMN_TORCH_ENV" || return 1
    # shellcheck disable=SC2086
    "$AMFMN_PYTHON" -m pip install --quiet --disable-pip-version-check $AMFMN_PY_PACKAGES || return 1
    echo "$AMFMN_PY_PACKAGES" > "$stamp"
}

amfmn_setup_python || return 1 2>/dev/null || exit 1

# NASM lets the build compile libjpeg-turbo's SIMD code (the loader 1.2x faster on JPEG, the same
# pixels); without it the build falls back to plain C. Installed from Debian when we can.
if ! command -v nasm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "amfmn: installing Debian's nasm for libjpeg-turbo's SIMD decoding" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nasm >/dev/null 2>&1 || {
            apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nasm >/dev/null 2>&1
        } || echo "amfmn: nasm could not be installed; JPEG decoding is built without SIMD" >&2
    else
        echo "amfmn: no nasm (apt-get install nasm): JPEG decoding is built without SIMD (the loader is about 1.2x slower on JPEG)" >&2
    fi
fi

if [ -z "${LIBTORCH:-}" ]; then
    LIBTORCH="$("$AMFMN_PYTHON" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
fi
export LIBTORCH
unset LIBTORCH_USE_PYTORCH
