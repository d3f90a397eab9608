#!/usr/bin/env bash
# The README's test command. Builds the plugins (Rust, Python, JavaScript) and the
# gateway binary, then runs every test of the workspace. Tests that need root skip
# with a message when not run as root; CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/build-plugins.sh ] || [ -f scripts/build-plugins.sh ]; then
    bash scripts/build-plugins.sh
fi
cargo build --locked -p wisp --bins
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export WISP_BIN="$target_dir/debug/wisp"
mkdir -p build
export WISP_MATRIX_REPORT="$PWD/build/interop-matrix.txt"
rm -f "$WISP_MATRIX_REPORT"
cargo test --locked "$@"
if [ -s "$WISP_MATRIX_REPORT" ]; then
    echo "=== strongSwan interop matrix (tests/tests/interop_matrix.rs) ==="
    cat "$WISP_MATRIX_REPORT"
fi
