#!/usr/bin/env bash
# The README's test command. Builds the plugins (Rust, Python, JavaScript), then
# runs every test of the workspace. Tests that need root skip with a message when
# not run as root; CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/build-plugins.sh ]; then bash scripts/build-plugins.sh; fi
cargo test --locked
