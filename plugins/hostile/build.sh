#!/usr/bin/env bash
# Builds the hostile test plugins for wasm32-wasip2 and copies them to
# build/plugins/hostile-*.wasm (repository root). Self-contained: its own
# workspace, its own target dir (plugins/hostile/target unless
# HOSTILE_TARGET_DIR is set). Needs `rustup target add wasm32-wasip2`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/build/plugins"
target="${HOSTILE_TARGET_DIR:-$here/target}"
mkdir -p "$out"
cd "$here"

build() { # build <package> <output name> [features]
    local pkg="$1" name="$2" features="${3:-}"
    local args=(build --locked --release --target wasm32-wasip2 -p "$pkg" --target-dir "$target")
    if [ -n "$features" ]; then args+=(--features "$features"); fi
    cargo "${args[@]}" >&2
    local lib="${pkg//-/_}"
    cp "$target/wasm32-wasip2/release/$lib.wasm" "$out/$name.wasm.tmp"
    mv "$out/$name.wasm.tmp" "$out/$name.wasm"
    echo "built $out/$name.wasm"
}

build hostile-policy hostile-v1
build hostile-policy hostile-v2 v2
build hostile-policy hostile-trap trap
build hostile-policy hostile-spin spin
build hostile-policy hostile-sleep sleep
build hostile-policy hostile-bomb bomb
build hostile-policy hostile-bad-index bad-index
build hostile-policy hostile-wide-selector wide-selector
build hostile-policy hostile-recursion recursion
build hostile-policy hostile-log-flood log-flood
build hostile-policy hostile-huge-answer huge-answer
build hostile-policy hostile-bad-address bad-address
# The oversized and the slow-to-compile components are derived from
# hostile-v1/-v2 by the tests themselves (host/policy/tests/common): a 65 MiB
# custom section, and an extra core module with megabytes of code.
build hostile-wrong-world hostile-wrong-world
build hostile-missing-export hostile-missing-export
build hostile-old-wit hostile-old-wit
build hostile-old-wit-v2 hostile-old-wit-v2
build hostile-old-wit-v3 hostile-old-wit-v3
