#!/usr/bin/env bash
# Train then test AMFMN on RSICD (option/RSICD_AMFMN.yaml); CARD picks the GPU.
exec "$(dirname "$0")/run_amfmn.sh" rsicd "$@"
