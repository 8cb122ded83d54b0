#!/usr/bin/env bash
# Load on `amfmn serve` over loopback only: 10,000 images with synthetic codes, 8 clients of at
# most 250 text searches each (60 s at most); then a 10 s burst of 32 clients against --queue 4
# (fast 503s, recovery). Stops by itself; prints one table per phase.
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
cargo bench --bench serve --no-run --quiet 2>/dev/null
out=$(cargo bench --bench serve --quiet -- "${1:-10000}" "${2:-8}")
value() { echo "$out" | sed -n "s/^$1=//p"; }
printf '%-8s %-8s %9s %10s %8s %8s %8s %7s %9s\n' images clients requests "req/s" "p50 ms" "p95 ms" "p99 ms" errors "RSS MB"
printf '%-8s %-8s %9s %10s %8s %8s %8s %7s %9s\n' "$(value images)" "$(value clients)" "$(value requests)" \
    "$(value requests_per_s)" "$(value p50_ms)" "$(value p95_ms)" "$(value p99_ms)" "$(value errors)" "$(value peak_rss_mb)"
echo
printf '%-22s %9s %9s %9s %6s %12s %12s %14s %12s %9s\n' "burst (--queue 4)" requests accepted "503" other \
    "503 p50 ms" "503 p99 ms" "accepted p99" "after burst" "RSS MB"
printf '%-22s %9s %9s %9s %6s %12s %12s %14s %12s %9s\n' "32 clients, $(value burst_seconds) s" "$(value burst_requests)" \
    "$(value burst_accepted)" "$(value burst_refused_503)" "$(value burst_other)" "$(value burst_503_p50_ms)" \
    "$(value burst_503_p99_ms)" "$(value burst_accepted_p99_ms)" "$(value after_burst_status)" "$(value burst_peak_rss_mb)"
