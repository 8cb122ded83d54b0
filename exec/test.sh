#!/usr/bin/env bash
# The test command: installs the PyTorch environment on first use (libtorch for the build;
# NLTK, PIL, torchvision and PyTorch for the reference tests), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --benches --quiet
cargo test --release "$@"
