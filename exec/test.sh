#!/usr/bin/env bash
# The test command: installs the PyTorch environment on first use (libtorch for the build;
# NLTK, PIL, torchvision and PyTorch for the reference tests), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
# Style first, so a slip fails in seconds: formatting, then clippy with every warning an error.
echo "amfmn: checking style (cargo fmt --check, cargo clippy --all-targets -- -D warnings)" >&2
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings
# The search page is checked in headless Chromium (Debian's package).
if [ -z "${AMFMN_CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "amfmn: installing Debian's chromium for the HTML page test" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || {
            apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
        }
    else
        echo "amfmn: the HTML page test needs Chromium: apt-get install chromium (or set AMFMN_CHROMIUM)" >&2
        exit 1
    fi
fi
cargo build --release --benches --quiet
cargo test --release "$@"
