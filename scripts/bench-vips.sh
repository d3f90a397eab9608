#!/usr/bin/env bash
# Issue 13's scale bench: scripts/bench-scale.sh's establishment phase three
# times in one run:
#   1. as issue 11 measured it: 100 identities, fixed selectors;
#   2. the control: every IKE SA an identity of its own (10,000), fixed selectors;
#   3. road warriors: the same identities, each asking for a virtual IP from
#      a /16 pool (`vips = 0.0.0.0`), its selector that address.
# Printed side by side: the rate, the latency of IKE_SA_INIT + IKE_AUTH with
# its Child SA, the gateway's memory per SA and the distinct addresses handed
# out. 3 minus 2 is what leasing an address costs per SA. Needs root; release
# build (bench-scale.sh builds it).
#   scripts/bench-vips.sh [total] [sources] [window]   (default 10000 100 256)
set -euo pipefail
TOTAL=${1:-10000}
SOURCES=${2:-100}
WINDOW=${3:-256}
if [ "$(id -u)" != 0 ]; then echo "skipped: bench-vips needs root (creates network namespaces)"; exit 0; fi
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d /tmp/bench-vips.XXXX)
trap 'rm -rf "$OUT"' EXIT
for mode in 0 ids 1; do
  echo "== VIPS=$mode =="
  CHURN=0 VIPS=$mode "$HERE/bench-scale.sh" "$TOTAL" "$SOURCES" "$WINDOW" >"$OUT/$mode" 2>&1 || { cat "$OUT/$mode"; exit 1; }
  cat "$OUT/$mode"
done
field() { grep -o "$2=[0-9.]*" "$OUT/$1" | head -1 | cut -d= -f2; }
row() {
  printf '| %s | %s / %s | %s | %s | %s | %s | %s |\n' "$2" "$(field "$1" established)" "$(field "$1" started)" \
    "$(field "$1" rate)" "$(field "$1" latency_ms_p50)" "$(field "$1" latency_ms_p99)" "$(field "$1" rss_per_sa_kib)" \
    "$(field "$1" distinct_vips || true)"
}
echo
echo "| $TOTAL IKE SAs, window $WINDOW | established | rate /s | p50 ms | p99 ms | gateway KiB per SA | distinct virtual IPs |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row 0 "$SOURCES identities, fixed selectors"
row ids "$TOTAL identities, fixed selectors"
row 1 "$TOTAL identities, a virtual IP each"
grep '^virtual IPs:' "$OUT/1" || true
awk -v a="$(field ids latency_ms_p50)" -v b="$(field 1 latency_ms_p50)" -v ra="$(field ids rate)" -v rb="$(field 1 rate)" \
  'BEGIN { if (a > 0 && ra > 0) printf "leasing a virtual IP: median latency %+.1f ms (%.2fx), rate %.2fx of the control\n", b - a, b / a, rb / ra }'
