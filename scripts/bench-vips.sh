#!/usr/bin/env bash
# Issue 13's scale bench: scripts/bench-scale.sh's establishment phase twice
# in one run, first as before (100 identities, fixed selectors), then with
# every IKE SA a road warrior of its own (10,000 identities, each asking for
# a virtual IP from a /16 pool; its selector is that address), and the two
# side by side: the rate, the latency of a whole IKE_AUTH + Child SA, the
# gateway's memory per SA, and how many distinct addresses came back.
# The difference of the latencies is what leasing costs per SA (the only
# other difference is the identity count). Needs root; release build.
#   scripts/bench-vips.sh [total] [sources] [window]   (default 10000 100 256)
set -euo pipefail
TOTAL=${1:-10000}
SOURCES=${2:-100}
WINDOW=${3:-256}
if [ "$(id -u)" != 0 ]; then echo "skipped: bench-vips needs root (creates network namespaces)"; exit 0; fi
HERE=$(cd "$(dirname "$0")" && pwd)
run() {
  CHURN=0 VIPS=$1 "$HERE/bench-scale.sh" "$TOTAL" "$SOURCES" "$WINDOW"
}
echo "== without virtual IPs =="
A=$(run 0 | tee /dev/stderr)
echo "== with virtual IPs =="
B=$(run 1 | tee /dev/stderr)
field() { echo "$1" | grep -o "$2=[0-9.]*" | head -1 | cut -d= -f2; }
row() {
  local name=$1 out=$2
  local client
  client=$(echo "$out" | grep '^client:')
  printf '| %s | %s / %s | %s | %s | %s | %s | %s |\n' "$name" \
    "$(field "$client" established)" "$(field "$client" started)" "$(field "$client" rate)" \
    "$(field "$client" latency_ms_p50)" "$(field "$client" latency_ms_p99)" \
    "$(echo "$out" | grep -o 'rss_per_sa_kib=[0-9.]*' | cut -d= -f2)" \
    "$(field "$client" distinct_vips)"
}
echo
echo "| $TOTAL IKE SAs | established | rate /s | p50 ms | p99 ms | gateway KiB per SA | distinct virtual IPs |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row "fixed selectors, $SOURCES identities" "$A"
row "virtual IPs, $TOTAL identities" "$B"
echo "$B" | grep '^virtual IPs:' || true
P50A=$(field "$(echo "$A" | grep '^client:')" latency_ms_p50)
P50B=$(field "$(echo "$B" | grep '^client:')" latency_ms_p50)
awk -v a="$P50A" -v b="$P50B" 'BEGIN { if (a > 0) printf "median latency with a virtual IP: %+.1f ms (%.2fx)\n", b - a, b / a }'
