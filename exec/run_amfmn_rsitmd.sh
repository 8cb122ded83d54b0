#!/usr/bin/env bash
# Train then test AMFMN on RSITMD (option/RSITMD_AMFMN.yaml); CARD picks the GPU.
exec "$(dirname "$0")/run_amfmn.sh" rsitmd "$@"
