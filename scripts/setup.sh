#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian 12 machine
# with a Rust toolchain (rustup). Idempotent. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
pkgs=(iproute2 iputils-ping iperf3 procps nftables conntrack
      strongswan-charon strongswan-swanctl libstrongswan-standard-plugins
      libstrongswan-extra-plugins libcharon-extra-plugins libcharon-extauth-plugins
      strongswan-pki)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    # No service should start: the tests run charon themselves, in namespaces.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    rm -f /usr/sbin/policy-rc.d
fi

rustup target add wasm32-wasip2
rustup component add clippy rustfmt   # scripts/lint.sh

# Plugin toolchains for the Python and JavaScript example plugins.
python3 -m pip install -q -r scripts/requirements.txt
if [ -f examples/plugins/js/package-lock.json ]; then
    (cd examples/plugins/js && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
