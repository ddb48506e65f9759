#!/usr/bin/env bash
# Builds the npm package into pkg/: release wasm → wasm-bindgen (--target web) → wasm-opt -Oz →
# the JS entry and its types (tsc, js/*.ts), the default model and package.json (js/package.json).
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
# The entry points: js/*.ts, strict TypeScript, compiled next to the wasm-bindgen output whose types
# they import (js/tsconfig.json's rootDirs find it in $OUT.tmp/); tsc writes index.js, widget.js and
# their .d.ts, and fails the build on a type error.
node_modules/.bin/tsc -p js/tsconfig.json --outDir "$OUT.tmp"
# The widgets' stylesheet as a file, for pages whose CSP forbids injected styles: the one definition
# is WIDGET_CSS in js/widget.ts.
node -e 'import(process.argv[1]).then((m) => require("fs").writeFileSync(process.argv[2], m.WIDGET_CSS.trimStart()))' \
  "$PWD/$OUT.tmp/widget.js" "$OUT.tmp/widget.css"
cp models/feedloop-default.onnx "$OUT.tmp/"
cp README.md LICENSE NOTICE "$OUT.tmp/"
# The manifest is js/package.json, checked in; its version must be the crate's, and every file it
# names (exports, types, files) must be in the package.
VERSION=$(cargo metadata --no-deps --format-version 1 | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    console.log(JSON.parse(s).packages.find(p => p.name === "feedloop").version);
  });')
cp js/package.json "$OUT.tmp/package.json"
node -e '
  const fs = require("fs"), path = require("path");
  const [dir, version] = process.argv.slice(1);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  if (manifest.version !== version) {
    console.error(`js/package.json: version ${manifest.version}, but the feedloop crate is ${version}: make them equal`);
    process.exit(1);
  }
  const named = [manifest.main, manifest.module, manifest.types, ...manifest.files,
    ...Object.values(manifest.exports).flatMap((e) => (typeof e === "string" ? [e] : Object.values(e)))];
  const missing = [...new Set(named.map((f) => path.normalize(f)))].filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) {
    console.error(`js/package.json names files the package lacks: ${missing.join(", ")}`);
    process.exit(1);
  }
' "$OUT.tmp" "$VERSION"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "pkg/ built:"
ls -l "$OUT"
