#!/usr/bin/env bash
# Mutation fuzzing of every file reader by hand: exec/fuzz.sh N runs N seeded mutations per
# reader (CI runs 300), each reader in a child process under a memory limit.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
AMFMN_FUZZ_MUTATIONS="${1:-3000}" cargo test --release --test fuzz -- --nocapture every_reader 2>&1 | grep -E '^fuzz |test result|FAILED|panicked'
