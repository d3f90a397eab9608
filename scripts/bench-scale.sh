#!/usr/bin/env bash
# Many IKE SAs against one wisp gateway (issue 11's scale bench).
#   G: the gateway, 10.76.0.1/16, one connection `load` with
#      remote_addrs = 10.76.0.0/16 and remote.id = *.load.test
#   L: wisp-load (host/gateway/examples/wisp-load.rs), one wisp_ike engine as
#      SOURCES initiators (10.76.1.1 ...), TOTAL IKE SAs with a Child SA each,
#      WINDOW negotiations in flight
# Prints the establishment rate, the gateway's RSS per IKE SA + Child SA, and
# how long `wisp status --json` takes with all of them up. Needs root.
#   scripts/bench-scale.sh [total] [sources] [window]   (default 10000 100 256)
#   PROFILE=debug scripts/bench-scale.sh                 (use the test build)
set -euo pipefail
TOTAL=${1:-10000}
SOURCES=${2:-100}
WINDOW=${3:-256}
if [ "$(id -u)" != 0 ]; then echo "skipped: bench-scale needs root (creates network namespaces)"; exit 0; fi
[ "$SOURCES" -le 250 ] || { echo "at most 250 sources"; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=${PROFILE:-release}
cargo build $([ "$PROFILE" = release ] && echo --release) -q -p wisp --bin wisp --example wisp-load --manifest-path "$ROOT/Cargo.toml"
WISP=$CARGO_TARGET_DIR/$PROFILE/wisp
LOAD=$CARGO_TARGET_DIR/$PROFILE/examples/wisp-load
PLUGIN=$ROOT/build/plugins/default.wasm
[ -f "$PLUGIN" ] || { echo "$PLUGIN missing: run scripts/build-plugins.sh"; exit 1; }

TAG=wsc$(( $$ % 100000 ))
G=${TAG}g; L=${TAG}l
DIR=$(mktemp -d /tmp/$TAG.XXXX)
PIDS=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "$G" "$L"; do ip netns del "$n" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
for n in "$G" "$L"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add "${TAG}gl" netns "$G" type veth peer name "${TAG}lg" netns "$L"
ip -n "$G" addr add 10.76.0.1/16 dev "${TAG}gl"
ip -n "$L" addr add 10.76.1.1/16 dev "${TAG}lg"
for i in $(seq 2 "$SOURCES"); do ip -n "$L" addr add "10.76.1.$i/16" dev "${TAG}lg"; done
ip -n "$G" link set "${TAG}gl" up; ip -n "$L" link set "${TAG}lg" up

IDS=$(for i in $(seq 1 "$SOURCES"); do printf '"c%d.load.test",' "$i"; done | sed 's/,$//')
PSK=load-psk-0123456789abcdef
cat >"$DIR/g.toml" <<EOF
log_level = "warn"
[tun]
name = "wsc0"
addrs = ["10.199.0.1/16"]
[plugin]
path = "$PLUGIN"
[plugin.settings]
allowed_ids = [$IDS]
# The client is one legitimate source of load: admission limits out of its way.
[ike]
cookie_rate_threshold = 1000000
cookie_threshold = 1000000
init_limit_half_open = 1000000
block_threshold = 1000000
[connections.load]
local_addrs = ["10.76.0.1"]
remote_addrs = ["10.76.0.0/16"]
local.id = "gw.load.test"
remote.id = "*.load.test"
auth.psk = "$PSK"
max_ike_sas = $((TOTAL + 100))
max_child_sas = $((TOTAL + 100))
[connections.load.children.n]
local_ts = ["10.199.0.0/16"]
remote_ts = ["10.200.0.0/16"]
esp_proposals = ["aes128gcm16"]
EOF
chmod 600 "$DIR/g.toml"
ip netns exec "$G" "$WISP" run -c "$DIR/g.toml" --control "$DIR/g.sock" >"$DIR/g.log" 2>&1 &
GPID=$!; PIDS+=("$GPID")
for _ in $(seq 1 100); do [ -S "$DIR/g.sock" ] && break; sleep 0.1; done
[ -S "$DIR/g.sock" ] || { echo "gateway did not start:"; cat "$DIR/g.log"; exit 1; }
# PERF=file: a flat CPU profile of the gateway during the load (perf record).
if [ -n "${PERF:-}" ]; then perf record -q -e cpu-clock -F 499 -p "$GPID" -o "$PERF" >/dev/null 2>&1 & PIDS+=("$!"); fi
rss() { awk '/VmRSS/ {print $2}' "/proc/$GPID/status"; }
RSS0=$(rss)
mkfifo "$DIR/hold"
ip netns exec "$L" "$LOAD" 10.76.0.1 10.76.1. 1 "$SOURCES" "$TOTAL" "$WINDOW" "$PSK" <"$DIR/hold" >"$DIR/load.out" 2>"$DIR/load.err" &
PIDS+=("$!")
exec 3>"$DIR/hold"
for _ in $(seq 1 6000); do grep -q '^started=' "$DIR/load.out" 2>/dev/null && break; sleep 0.1; done
RESULT=$(grep '^started=' "$DIR/load.out" || { echo "load client did not finish"; tail -5 "$DIR/load.err"; exit 1; })
sleep 1
RSS1=$(rss)
T0=$(date +%s.%N)
"$WISP" --control "$DIR/g.sock" status --json >"$DIR/status.json"
T1=$(date +%s.%N)
SAS=$(grep -o '"local_spi"' "$DIR/status.json" | wc -l)
KIDS=$(grep -o '"spi_in"' "$DIR/status.json" | wc -l)
EST=$(echo "$RESULT" | sed 's/.*established=\([0-9]*\).*/\1/')
echo "client: $RESULT"
echo "gateway: ike_sas=$SAS child_sas=$KIDS rss_before_kb=$RSS0 rss_after_kb=$RSS1 rss_per_sa_kib=$(awk -v a="$RSS0" -v b="$RSS1" -v n="$EST" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')"
echo "status --json: $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.3f", b - a }') s for $SAS IKE SAs ($(wc -c <"$DIR/status.json") bytes)"
grep -i "warn\|error" "$DIR/g.log" | head -5 || true
