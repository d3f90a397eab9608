#!/usr/bin/env bash
# The demo: two wisp gateways in two network namespaces, a tunnel, pings, status,
# then a policy change (wisp reload) that denies the peer: the live tunnel is
# re-checked and goes down within a second, with the reason in `wisp status`,
# and the next negotiation is refused. Needs root. Builds the plugins (if missing) and wisp in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh needs root (it creates network namespaces)" >&2
  exit 1
fi
if [ ! -f build/plugins/default.wasm ] && [ -x scripts/build-plugins.sh ]; then
  bash scripts/build-plugins.sh
fi
cargo build --release --locked -p wisp --bins
exec env WISP_DEFAULT_PLUGIN="$PWD/build/plugins/default.wasm" \
  "${CARGO_TARGET_DIR:-target}/release/wisp" demo "$@"
