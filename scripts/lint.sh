#!/usr/bin/env bash
# Mechanical hygiene, run by .ci/run before the tests: the workspace is
# rustfmt-clean (rustfmt.toml) and clippy-clean with every warning an error.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
