#!/usr/bin/env bash
# IKE_SA_INIT flood against a wisp responder while a TCP stream runs through
# an established tunnel. Three wisp gateways in network namespaces:
#   A (10.99.1.1) ==tunnel== B (10.99.1.2, the responder)   iperf3 A -> B
#   C (10.96.0.2) a legitimate new peer of B, brought up during the flood
#   F (10.97.1.1-250) the flooder: RATE spoofed-looking IKE_SA_INIT/s from
#     250 source addresses (every other one with a low-order x25519 value)
# Prints tunnel throughput without and with the flood, B's peak RSS, the
# cookies B sent, and whether C established during the flood (and how fast).
# Needs root and iperf3.
#   scripts/bench-flood.sh [seconds] [rate-per-second]   (default 10 s, 20000/s)
#   PROFILE=debug scripts/bench-flood.sh                  (use the test build)
set -euo pipefail
DUR=${1:-10}
RATE=${2:-20000}
if [ "$(id -u)" != 0 ]; then echo "skipped: bench-flood needs root (creates network namespaces)"; exit 0; fi
command -v iperf3 >/dev/null || { echo "iperf3 missing (scripts/setup.sh installs it)"; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# PROFILE=debug reuses the test build (dependencies and the packet path are
# optimized in it too, see Cargo.toml), release is the default.
PROFILE=${PROFILE:-release}
cargo build $([ "$PROFILE" = release ] && echo --release) -q -p wisp --bin wisp --example wisp-flood --manifest-path "$ROOT/Cargo.toml"
WISP=$CARGO_TARGET_DIR/$PROFILE/wisp
FLOOD=$CARGO_TARGET_DIR/$PROFILE/examples/wisp-flood
PLUGIN=$ROOT/build/plugins/default.wasm
[ -f "$PLUGIN" ] || { echo "$PLUGIN missing: run scripts/build-plugins.sh"; exit 1; }

TAG=wbf$(( $$ % 100000 ))
A=${TAG}a; B=${TAG}b; C=${TAG}c; F=${TAG}f
DIR=$(mktemp -d /tmp/$TAG.XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "$A" "$B" "$C" "$F"; do ip netns del "$n" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
for n in "$A" "$B" "$C" "$F"; do ip netns add "$n"; ip -n "$n" link set lo up; done
link() { # ns1 if1 addr1 ns2 if2 addr2
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3" dev "$2"; ip -n "$4" addr add "$6" dev "$5"
  ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
}
link "$A" "${TAG}ab" 10.99.1.1/24 "$B" "${TAG}ba" 10.99.1.2/24
link "$C" "${TAG}cb" 10.96.0.2/24 "$B" "${TAG}bc" 10.96.0.1/24
link "$F" "${TAG}fb" 10.97.1.1/16 "$B" "${TAG}bf" 10.97.0.1/16
for i in $(seq 2 250); do ip -n "$F" addr add "10.97.1.$i/16" dev "${TAG}fb"; done
# Connection bf names 64 of the 250 flood sources (remote_addrs holds at most
# 64): their IKE_SA_INITs would cost a DH once admitted; the other 186 are
# refused by the engine without one (no connection for them).
FLOOD_ADDRS=$(for i in $(seq 1 64); do printf '"10.97.1.%d",' "$i"; done | sed 's/,$//')

conf() { # name tun-addr then connection blocks on stdin
  local f=$DIR/$1.toml
  { echo "log_level = \"warn\""; echo "[tun]"; echo "name = \"wisp$1\""; echo "addrs = [\"$2\"]"
    echo "[plugin]"; echo "path = \"$PLUGIN\""
    echo "[plugin.settings]"; echo "allowed_ids = [\"a.flood.test\", \"b.flood.test\", \"c.flood.test\"]"; cat; } >"$f"
  chmod 600 "$f"
}
conn() { # name local remote lid rid psk lts rts
  cat <<C
[connections.$1]
local_addrs = ["$2"]
remote_addrs = [$3]
proposals = ["aes128gcm16-prfsha256-x25519"]
start_action = "none"
local.id = "$4"
remote.id = "$5"
auth.psk = "$6"
[connections.$1.children.net]
local_ts = ["$7"]
remote_ts = ["$8"]
esp_proposals = ["aes128gcm16"]
C
}
conn ab 10.99.1.1 '"10.99.1.2"' a.flood.test b.flood.test psk-ab-0123456789 10.98.1.0/24 10.98.2.0/24 | conf a 10.98.1.1/24
{ conn ba 10.99.1.2 '"10.99.1.1"' b.flood.test a.flood.test psk-ab-0123456789 10.98.2.0/24 10.98.1.0/24
  conn bc 10.96.0.1 '"10.96.0.2"' b.flood.test c.flood.test psk-bc-0123456789 10.98.2.0/24 10.98.3.0/24
  # The flood targets a configured connection (its IKE_SA_INITs would cost DH).
  conn bf 10.97.0.1 "$FLOOD_ADDRS" b.flood.test f.flood.test psk-bf-0123456789 10.98.2.0/24 10.98.4.0/24
} | conf b 10.98.2.1/24
conn cb 10.96.0.2 '"10.96.0.1"' c.flood.test b.flood.test psk-bc-0123456789 10.98.3.0/24 10.98.2.0/24 | conf c 10.98.3.1/24

start() { # ns name
  ip netns exec "$1" "$WISP" run -c "$DIR/$2.toml" --control "$DIR/$2.sock" >"$DIR/$2.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$2=$!"
  for _ in $(seq 100); do [ -S "$DIR/$2.sock" ] && "$WISP" --control "$DIR/$2.sock" status >/dev/null 2>&1 && return; sleep 0.1; done
  echo "wisp $2 did not start:"; cat "$DIR/$2.log"; exit 1
}
start "$A" a; start "$B" b; start "$C" c
w() { local n=$1; shift; "$WISP" --control "$DIR/$n.sock" "$@"; }
w a up ab --timeout 20 >/dev/null
ip netns exec "$A" ping -c 2 -W 2 -I 10.98.1.1 10.98.2.1 >/dev/null || { echo "tunnel does not pass ping"; cat "$DIR"/*.log; exit 1; }

iperf() { # seconds
  ip netns exec "$B" iperf3 -s -1 -B 10.98.2.1 >/dev/null 2>&1 &
  local sp=$!
  sleep 0.5
  local out
  out=$(ip netns exec "$A" iperf3 -c 10.98.2.1 -B 10.98.1.1 -t "$1" -f m 2>&1) || { echo "iperf3 failed: $out" >&2; kill $sp 2>/dev/null; echo 0; return; }
  wait $sp 2>/dev/null || true
  echo "$out" | awk '/receiver/ {for (i=1;i<=NF;i++) if ($i ~ /Mbits\/sec/) print $(i-1)}' | tail -1
}
ike_counter() { # name counter
  w b status --json | python3 -c "import json,sys; d=dict(json.load(sys.stdin).get('ike', [])); print(d.get('$1', '?'))"
}

BASE=$(iperf "$DUR")
RSS_BEFORE=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID_b/status")
# Flood for DUR seconds starting just after the stream; C comes up in the middle.
ip netns exec "$F" "$FLOOD" 10.97.0.1 "$RATE" "$DUR" 10.97.1. 1 250 >"$DIR/flood.out" 2>&1 &
FP=$!; PIDS+=($FP)
( sleep $(( DUR / 2 )); T0=$(date +%s.%N)
  if w c up cb --timeout $(( DUR )) >"$DIR/c-up.out" 2>&1; then echo "yes $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')"; else echo "no"; fi >"$DIR/c-up.res" ) &
CP=$!
FLOODED=$(iperf "$DUR")
wait $FP || true
wait $CP || true
RSS=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID_b/status")
C_UP=$(cat "$DIR/c-up.res" 2>/dev/null || echo "no")
C_OK=no
ip netns exec "$C" ping -c 1 -W 2 -I 10.98.3.1 10.98.2.1 >/dev/null 2>&1 && C_OK=yes
KEPT=$(awk -v t="$FLOODED" -v p="$BASE" 'BEGIN { if (p > 0) printf "%.1f %%", 100*t/p; else print "?" }')
echo "flood: $(cat "$DIR/flood.out")"
echo "responder B: ike $(w b status --json | python3 -c "import json,sys; print(' '.join(f'{k}={v}' for k,v in json.load(sys.stdin).get('ike', [])))")"
echo "iperf3 TCP ${DUR}s through the A-B tunnel, flood ${RATE}/s for ${DUR}s from 250 addresses, $(nproc) cores, $(uname -r)"
echo "| tunnel Mbit/s without flood | with flood | kept | B peak RSS MB (before -> after flood) | cookies sent by B | new peer C up during flood (s) | C passes traffic |"
echo "|---:|---:|---:|---:|---:|---|---|"
echo "| $BASE | $FLOODED | $KEPT | $RSS_BEFORE -> $RSS | $(ike_counter ike_cookies_sent) | $C_UP | $C_OK |"
