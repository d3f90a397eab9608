#!/usr/bin/env bash
# Builds every policy plugin into build/plugins/*.wasm:
#   default.wasm                      plugins/default (the policy wisp ships)
#   allowlist.wasm time-window.wasm   examples/plugins/rust/*
#   tenant-subnets.wasm sa-cap.wasm
#   allowlist-py.wasm                 examples/plugins/python (componentize-py)
#   allowlist-js.wasm                 examples/plugins/js (componentize-js)
#   hostile plugins                   plugins/hostile/build.sh, when present
# Rust guests build in target/guest (wasm32-wasip2, release). Python and JS are
# rebuilt only when their sources or the WIT changed. Any failure stops the
# script with a non-zero exit. Tools come from scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/plugins
mkdir -p "$OUT"

die() { echo "build-plugins: $*" >&2; exit 1; }
step() { echo "build-plugins: $*" >&2; }
now_ms() { date +%s%3N; }

# Copy atomically (a watcher never sees a half-written file).
install_wasm() {
    local src=$1 dst=$2
    [ -s "$src" ] || die "expected output $src is missing"
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then return 0; fi
    cp "$src" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"
}

# True when $1 is missing or older than any file under the other arguments.
stale() {
    local out=$1; shift
    [ -f "$out" ] || return 0
    [ -n "$(find "$@" -newer "$out" -type f \
        -not -path '*/node_modules/*' -not -path '*/__pycache__/*' -print -quit 2>/dev/null)" ]
}

# --- Rust ------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
    || die "Rust target wasm32-wasip2 missing: rustup target add wasm32-wasip2 (scripts/setup.sh)"
t0=$(now_ms)
step "rust guests (wasm32-wasip2, release) -> target/guest"
CARGO_TARGET_DIR=$ROOT/target/guest cargo build --locked --release -q \
    --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --workspace \
    || die "cargo build of the Rust plugins failed"
REL=$ROOT/target/guest/wasm32-wasip2/release
install_wasm "$REL/wisp_default_policy.wasm" "$OUT/default.wasm"
for ex in allowlist time-window tenant-subnets sa-cap; do
    if [ -d "examples/plugins/rust/$ex" ]; then
        install_wasm "$REL/wisp_example_${ex//-/_}.wasm" "$OUT/$ex.wasm"
    fi
done
step "rust: $(( $(now_ms) - t0 )) ms"

# --- Python (componentize-py) ------------------------------------------------
PYDIR=examples/plugins/python
if [ -f "$PYDIR/app.py" ]; then
    if stale "$OUT/allowlist-py.wasm" "$PYDIR" wit scripts/requirements.txt; then
        command -v componentize-py >/dev/null \
            || die "componentize-py not found: pip install -r scripts/requirements.txt (scripts/setup.sh)"
        t0=$(now_ms)
        step "python allowlist (componentize-py $(componentize-py --version 2>/dev/null | awk '{print $2}'))"
        tmp=$OUT/.allowlist-py.wasm.tmp.$$
        (cd "$PYDIR" && componentize-py -d "$ROOT/wit" -w policy-plugin \
            componentize --stub-wasi app -o "$tmp") >/dev/null \
            || { rm -f "$tmp"; die "componentize-py failed for $PYDIR"; }
        mv -f "$tmp" "$OUT/allowlist-py.wasm"
        step "python: $(( $(now_ms) - t0 )) ms"
    else
        step "python allowlist up to date"
    fi
fi

# --- JavaScript (componentize-js) --------------------------------------------
JSDIR=examples/plugins/js
if [ -f "$JSDIR/build.mjs" ]; then
    if stale "$OUT/allowlist-js.wasm" "$JSDIR" wit; then
        command -v node >/dev/null || die "node not found (scripts/setup.sh)"
        [ -d "$JSDIR/node_modules/@bytecodealliance/componentize-js" ] \
            || die "componentize-js not installed: (cd $JSDIR && npm ci) (scripts/setup.sh)"
        t0=$(now_ms)
        step "javascript allowlist (componentize-js)"
        tmp=$OUT/.allowlist-js.wasm.tmp.$$
        node "$JSDIR/build.mjs" "$tmp" || { rm -f "$tmp"; die "componentize-js failed for $JSDIR"; }
        mv -f "$tmp" "$OUT/allowlist-js.wasm"
        step "javascript: $(( $(now_ms) - t0 )) ms"
    else
        step "javascript allowlist up to date"
    fi
fi

# --- Hostile test plugins (owned by the policy host) --------------------------
if [ -f plugins/hostile/build.sh ]; then
    step "hostile plugins (plugins/hostile/build.sh)"
    bash plugins/hostile/build.sh || die "plugins/hostile/build.sh failed"
fi

ls -l "$OUT"/*.wasm | awk '{printf "build-plugins: %9d  %s\n", $5, $NF}' >&2
