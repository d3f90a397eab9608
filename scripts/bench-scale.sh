#!/usr/bin/env bash
# Many IKE SAs against one wisp gateway (issue 11's scale bench).
#   G: the gateway, 10.76.0.1/16, one connection `load` with
#      remote_addrs = 10.76.0.0/16 and remote.id = *.load.test
#   L: wisp-load (host/gateway/examples/wisp-load.rs), one wisp_ike engine as
#      SOURCES initiators (10.76.1.1 ...), TOTAL IKE SAs with a Child SA each,
#      WINDOW negotiations in flight
#   A: a wisp peer, 10.75.0.2, with one tunnel `a` to G (inner 10.198.0.0/24
#      to 10.199.0.0/16) carrying an iperf3 TCP stream
# Prints the establishment rate, the gateway's RSS per IKE SA + Child SA, and
# how long `wisp status --json` takes with all of them up. Then (unless
# CHURN=0) the churn phase: G's `load` connection has dpd_delay 10s, Child SA
# rekey_time 30s and IKE rekey_time 40s (rand_time 10s each), so over the
# next ~45 s every SA gets DPD and rekeys its Child SA and its IKE SA; the
# A-G tunnel's throughput during that is printed beside its throughput
# before the load (same run), with the worst 1-s interval. Needs root, iperf3.
#   scripts/bench-scale.sh [total] [sources] [window]   (default 10000 100 256)
#   PROFILE=debug scripts/bench-scale.sh                 (use the test build)
#   CHURN=0 scripts/bench-scale.sh                       (establishment only)
#   DUR=25                                               (seconds of iperf3 per phase)
#   WRAP="heaptrack -o /tmp/g" scripts/bench-scale.sh    (the gateway under a profiler)
#   VIPS=1 CHURN=0 scripts/bench-scale.sh                (road warriors: every SA its own identity
#                                                         asking for a virtual IP from a /16 pool;
#                                                         VIPS=ids: the identities, no virtual IPs)
#   scripts/bench-vips.sh                                (both, the same run, side by side)
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

CHURN=${CHURN:-1}
VIPS=${VIPS:-0}
DUR=${DUR:-25}
command -v iperf3 >/dev/null || [ "$CHURN" = 0 ] || { echo "iperf3 missing (scripts/setup.sh installs it)"; exit 1; }
TAG=wsc$(( $$ % 100000 ))
G=${TAG}g; L=${TAG}l; A=${TAG}a
DIR=$(mktemp -d /tmp/$TAG.XXXX)
PIDS=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "$G" "$L" "$A"; do ip netns del "$n" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
for n in "$G" "$L" "$A"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add "${TAG}gl" netns "$G" type veth peer name "${TAG}lg" netns "$L"
ip -n "$G" addr add 10.76.0.1/16 dev "${TAG}gl"
ip -n "$L" addr add 10.76.1.1/16 dev "${TAG}lg"
for i in $(seq 2 "$SOURCES"); do ip -n "$L" addr add "10.76.1.$i/16" dev "${TAG}lg"; done
ip -n "$G" link set "${TAG}gl" up; ip -n "$L" link set "${TAG}lg" up
ip link add "${TAG}ga" netns "$G" type veth peer name "${TAG}ag" netns "$A"
ip -n "$G" addr add 10.75.0.1/24 dev "${TAG}ga"; ip -n "$A" addr add 10.75.0.2/24 dev "${TAG}ag"
ip -n "$G" link set "${TAG}ga" up; ip -n "$A" link set "${TAG}ag" up

IDS=$(for i in $(seq 1 "$SOURCES"); do printf '"c%d.load.test",' "$i"; done)'"a.load.test"'
if [ "$VIPS" = ids ]; then
  # Every SA its own identity, no virtual IPs (bench-vips.sh's control).
  AUTHZ='allow_any = true'
  POOLS=''
  LOAD_REMOTE_TS='remote_ts = ["10.200.0.0/16"]'
  POOL_TABLE=''
elif [ "$VIPS" = 1 ]; then
  # Every SA its own identity (u0 ... uN): the default policy takes any peer
  # that proves the PSK; each asks for an address, its selector is that address.
  AUTHZ='allow_any = true'
  POOLS='pools = ["load"]'
  LOAD_REMOTE_TS=''
  POOL_TABLE=$'[pools.load]\naddrs = "10.200.0.0/16"'
else
  AUTHZ="allowed_ids = [$IDS]"
  POOLS=''
  LOAD_REMOTE_TS='remote_ts = ["10.200.0.0/16"]'
  POOL_TABLE=''
fi
PSK=load-psk-0123456789abcdef
# The churn: every SA of `load` gets DPD and rekeys both its SAs in the
# ~45 s after establishment (spread by rand_time).
if [ "$CHURN" != 0 ]; then
  IKE_CHURN=$'dpd_delay = "10s"\nrekey_time = "40s"\nrand_time = "10s"'
  CHILD_CHURN=$'rekey_time = "30s"\nrand_time = "10s"'
else
  IKE_CHURN=""; CHILD_CHURN=""
fi
cat >"$DIR/g.toml" <<EOF
log_level = "warn"
[tun]
name = "wsc0"
addrs = ["10.199.0.1/16"]
[plugin]
path = "$PLUGIN"
[plugin.settings]
$AUTHZ
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
$POOLS
$IKE_CHURN
[connections.load.children.n]
local_ts = ["10.199.0.0/16"]
$LOAD_REMOTE_TS
esp_proposals = ["aes128gcm16"]
$CHILD_CHURN
[connections.a]
local_addrs = ["10.75.0.1"]
remote_addrs = ["10.75.0.2"]
local.id = "gw.load.test"
remote.id = "a.load.test"
auth.psk = "tunnel-psk-0123456789"
[connections.a.children.n]
local_ts = ["10.199.0.0/16"]
remote_ts = ["10.198.0.0/24"]
esp_proposals = ["aes128gcm16"]
$POOL_TABLE
EOF
chmod 600 "$DIR/g.toml"
cat >"$DIR/a.toml" <<EOF
log_level = "warn"
[tun]
name = "wsca"
addrs = ["10.198.0.1/24"]
[plugin]
path = "$PLUGIN"
[plugin.settings]
allowed_ids = ["gw.load.test"]
[connections.g]
local_addrs = ["10.75.0.2"]
remote_addrs = ["10.75.0.1"]
local.id = "a.load.test"
remote.id = "gw.load.test"
auth.psk = "tunnel-psk-0123456789"
[connections.g.children.n]
local_ts = ["10.198.0.0/24"]
remote_ts = ["10.199.0.0/16"]
esp_proposals = ["aes128gcm16"]
EOF
chmod 600 "$DIR/a.toml"
# WRAP="heaptrack -o FILE": run the gateway under a profiler (word-split on purpose).
# shellcheck disable=SC2086
ip netns exec "$G" ${WRAP:-} "$WISP" run -c "$DIR/g.toml" --control "$DIR/g.sock" >"$DIR/g.log" 2>&1 &
GPID=$!; PIDS+=("$GPID")
for _ in $(seq 1 100); do [ -S "$DIR/g.sock" ] && break; sleep 0.1; done
[ -S "$DIR/g.sock" ] || { echo "gateway did not start:"; cat "$DIR/g.log"; exit 1; }
w() { local n=$1; shift; "$WISP" --control "$DIR/$n.sock" "$@"; }
# iperf3 TCP A -> G through the tunnel for $1 s: "average_mbit worst_1s_mbit".
iperf() {
  ip netns exec "$G" iperf3 -s -1 -B 10.199.0.1 >/dev/null 2>&1 &
  local sp=$! out
  sleep 0.5
  out=$(ip netns exec "$A" iperf3 -c 10.199.0.1 -B 10.198.0.1 -t "$1" -f m 2>&1) || { echo "iperf3 failed: $out" >&2; kill $sp 2>/dev/null; echo "0 0"; return; }
  wait $sp 2>/dev/null || true
  echo "$out" | awk '
    /receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /Mbits\/sec/) avg = $(i-1) }
    /sec/ && !/sender|receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /Mbits\/sec/) { v = $(i-1); if (min == "" || v + 0 < min + 0) min = v } }
    END { print avg + 0, min + 0 }'
}
if [ "$CHURN" != 0 ]; then
  ip netns exec "$A" "$WISP" run -c "$DIR/a.toml" --control "$DIR/a.sock" >"$DIR/a.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 100); do [ -S "$DIR/a.sock" ] && break; sleep 0.1; done
  w a up g --timeout 20 >/dev/null || { echo "tunnel A-G did not come up:"; cat "$DIR/a.log" "$DIR/g.log"; exit 1; }
  ip netns exec "$A" ping -c 2 -W 2 -I 10.198.0.1 10.199.0.1 >/dev/null || { echo "tunnel A-G does not pass ping"; exit 1; }
  read -r BASE BASE_MIN <<<"$(iperf "$DUR")"
fi
# PERF=file: a flat CPU profile of the gateway during the load (perf record).
if [ -n "${PERF:-}" ]; then perf record -q -e cpu-clock -F 499 -p "$GPID" -o "$PERF" >/dev/null 2>&1 & PIDS+=("$!"); fi
rss() { awk '/VmRSS/ {print $2}' "/proc/$GPID/status"; }
RSS0=$(rss)
mkfifo "$DIR/hold"
ip netns exec "$L" env WISP_LOAD_VIPS="$VIPS" "$LOAD" 10.76.0.1 10.76.1. 1 "$SOURCES" "$TOTAL" "$WINDOW" "$PSK" <"$DIR/hold" >"$DIR/load.out" 2>"$DIR/load.err" &
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
tr -d ' \n' <"$DIR/status.json" >"$DIR/status.min"
# The policy's work: decisions the plugin made, and those answered from memory.
num() { { grep -o "\"$1\":[0-9]*" "$DIR/status.min" || true; } | head -1 | grep -o '[0-9]*$' || true; }
echo "decisions: asked=$(num asked) remembered=$(num remembered) refused=$(num refused)"
if [ "$VIPS" = 1 ]; then
  # Leases as the gateway shows them: per SA, and in the pool.
  RV=$( { grep -o '"remote_vips":\["[0-9.]*"' "$DIR/status.min" || true; } | sort -u | wc -l)
  ONLINE=$( { grep -o '"name":"load","range":"[^"]*","size":"[0-9]*","online":[0-9]*' "$DIR/status.min" || true; } | grep -o '[0-9]*$' || true)
  echo "virtual IPs: gateway shows $RV distinct remote_vips, pool load online=$ONLINE"
fi
if [ "$CHURN" != 0 ]; then
  # Children rekey 20-30 s after they came up, IKE SAs 30-40 s, DPD runs
  # throughout: measure from ~15 s after the last came up, then let the rest finish.
  sleep 13
  read -r CH CH_MIN <<<"$(iperf "$DUR")"
  sleep $(( DUR < 32 ? 35 - DUR : 3 ))
  exec 3>&-
  for _ in $(seq 1 100); do grep -q '^held:' "$DIR/load.out" 2>/dev/null && break; sleep 0.1; done
  HELD=$(grep '^held:' "$DIR/load.out" || echo "held: (no report)")
  w g status --json >"$DIR/status2.json"
  SAS2=$(grep -o '"local_spi"' "$DIR/status2.json" | wc -l)
  KIDS2=$(grep -o '"spi_in"' "$DIR/status2.json" | wc -l)
  RSS2=$(rss)
  echo "churn: client $HELD; gateway after: ike_sas=$SAS2 child_sas=$KIDS2 rss_kb=$RSS2 ($(awk -v a="$RSS0" -v b="$RSS2" -v n="$EST" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }') KiB per SA)"
  echo "| tunnel A-G Mbit/s before the load | during DPD + rekeys of $EST SAs | kept | worst 1 s before | worst 1 s during |"
  echo "|---:|---:|---:|---:|---:|"
  echo "| $BASE | $CH | $(awk -v t="$CH" -v p="$BASE" 'BEGIN { if (p > 0) printf "%.1f %%", 100 * t / p; else print "?" }') | $BASE_MIN | $CH_MIN |"
fi
grep -i "warn\|error" "$DIR/g.log" | head -5 || true
