#!/usr/bin/env bash
# Builds the npm package into pkg/: release wasm → wasm-bindgen (--target web) → wasm-opt -Oz →
# the JS entry, types, the default model and package.json.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WASM="$TARGET_DIR/wasm32-unknown-unknown/release/feedloop.wasm"
OUT=pkg

cargo build --release --target wasm32-unknown-unknown -p feedloop
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
wasm-bindgen --target web --out-dir "$OUT.tmp" --out-name feedloop_wasm "$WASM"
# wasm-opt reads the target features wasm-bindgen kept; -Oz is the size the package ships at.
node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
  "$OUT.tmp/feedloop_wasm_bg.wasm" -o "$OUT.tmp/feedloop_wasm_bg.wasm"
cp js/index.js js/index.d.ts js/widget.js js/widget.d.ts "$OUT.tmp/"
cp models/feedloop-default.onnx "$OUT.tmp/"
cp README.md "$OUT.tmp/README.md"
VERSION=$(cargo metadata --no-deps --format-version 1 | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    console.log(JSON.parse(s).packages.find(p => p.name === "feedloop").version);
  });')
cat > "$OUT.tmp/package.json" <<JSON
{
  "name": "feedloop",
  "version": "$VERSION",
  "description": "Privacy-preserving on-device feedback loop: an ONNX reward model (tract, wasm) that ranks candidates in the page",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./index.js",
  "module": "./index.js",
  "types": "./index.d.ts",
  "exports": {
    ".": { "types": "./index.d.ts", "default": "./index.js" },
    "./widget": { "types": "./widget.d.ts", "default": "./widget.js" },
    "./feedloop-default.onnx": "./feedloop-default.onnx",
    "./package.json": "./package.json"
  },
  "files": [
    "index.js",
    "index.d.ts",
    "widget.js",
    "widget.d.ts",
    "feedloop_wasm.js",
    "feedloop_wasm.d.ts",
    "feedloop_wasm_bg.wasm",
    "feedloop_wasm_bg.wasm.d.ts",
    "feedloop-default.onnx",
    "README.md"
  ],
  "sideEffects": false,
  "keywords": ["ranking", "reward-model", "onnx", "wasm", "differential-privacy", "federated-learning"]
}
JSON
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "pkg/ built:"
ls -l "$OUT"
