#!/usr/bin/env bash
# iperf3 TCP through a wisp static-key tunnel between two network namespaces,
# and over the plain veth in the same run; AES-GCM and ChaCha20-Poly1305;
# each with the three TUN devices (tun-rs with offload = wisp's default,
# tun-rs without offload, tokio-tun); RSS of each gateway under load.
# Needs root and iperf3.
#   scripts/bench-tunnel.sh [seconds-per-run] [tun kinds...]
#   (default 10 s; kinds default: offload plain tokio-tun)
set -euo pipefail
DUR=${1:-10}
shift || true
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(offload plain tokio-tun)
if [ "$(id -u)" != 0 ]; then echo "skipped: bench-tunnel needs root (creates network namespaces)"; exit 0; fi
command -v iperf3 >/dev/null || { echo "iperf3 missing (scripts/setup.sh installs it)"; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p wisp --example wisp-static --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/examples/wisp-static

TAG=wbt$(( $$ % 100000 ))
A=${TAG}a; B=${TAG}b
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add "${TAG}a" netns "$A" type veth peer name "${TAG}b" netns "$B"
ip -n "$A" addr add 10.99.1.1/24 dev "${TAG}a"; ip -n "$B" addr add 10.99.1.2/24 dev "${TAG}b"
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set "${TAG}a" up; ip -n "$B" link set "${TAG}b" up

# iperf3 client run; prints receiver Mbit/s.
iperf() { # ns server-addr [client bind]
  local ns=$1 dst=$2 bind=${3:-}
  ip netns exec "$B" iperf3 -s -1 -B "$dst" >/dev/null 2>&1 &
  local sp=$!
  sleep 0.5
  local out
  out=$(ip netns exec "$ns" iperf3 -c "$dst" ${bind:+-B "$bind"} -t "$DUR" -f m 2>&1) || { echo "iperf3 failed: $out" >&2; kill $sp 2>/dev/null; echo 0; return; }
  wait $sp 2>/dev/null || true
  echo "$out" | awk '/receiver/ {for (i=1;i<=NF;i++) if ($i ~ /Mbits\/sec/) print $(i-1)}' | tail -1
}

rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

PLAIN=$(iperf "$A" 10.99.1.2)
ROWS=()
for AEAD in aes128gcm chacha20poly1305; do
for KIND in "${KINDS[@]}"; do
  ip netns exec "$A" "$BIN" a "$AEAD" 10.99.1.2 10.98.1.1 10.98.1.0/24 10.98.2.0/24 "$KIND" >"/tmp/$TAG-a.out" 2>"/tmp/$TAG-a.log" &
  PA=$!; PIDS+=("$PA")
  ip netns exec "$B" "$BIN" b "$AEAD" 10.99.1.1 10.98.2.1 10.98.2.0/24 10.98.1.0/24 "$KIND" >"/tmp/$TAG-b.out" 2>"/tmp/$TAG-b.log" &
  PB=$!; PIDS+=("$PB")
  sleep 1
  ip netns exec "$A" ping -c 2 -W 2 -I 10.98.1.1 10.98.2.1 >/dev/null || { echo "tunnel ($AEAD) does not pass ping"; cat "/tmp/$TAG-a.log" "/tmp/$TAG-b.log"; exit 1; }
  TUN=$(iperf "$A" 10.98.2.1 10.98.1.1)
  echo "$AEAD $KIND: $(head -1 /tmp/$TAG-a.out) ${TUN} Mbit/s" >&2
  RA=$(rss_mb $PA); RB=$(rss_mb $PB)
  kill $PA $PB 2>/dev/null || true; wait $PA $PB 2>/dev/null || true
  PIDS=()
  RATIO=$(awk -v t="$TUN" -v p="$PLAIN" 'BEGIN { if (p > 0) printf "%.1f %%", 100*t/p; else print "?" }')
  ROWS+=("| $AEAD | $KIND | $TUN | $PLAIN | $RATIO | $RA | $RB |")
done
done
rm -f /tmp/$TAG-[ab].log /tmp/$TAG-[ab].out
echo "iperf3 TCP, ${DUR}s per run, $(nproc) cores, $(uname -r)"
echo "| ESP transform | TUN | wisp tunnel Mbit/s | plain veth Mbit/s | tunnel/veth | RSS gw A (peak MB) | RSS gw B (peak MB) |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
