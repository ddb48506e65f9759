// Download size of the npm package: raw, gzip -9 and brotli q11, for wasm + JS (the budget) and the
// model (fetched separately, cached by the browser). Prints a table and writes target/bench/size.json.
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { gzipSync, brotliCompressSync, constants } from "node:zlib";

const dir = new URL("../pkg/", import.meta.url);
const groups = {
  "wasm + JS": ["feedloop_wasm_bg.wasm", "feedloop_wasm.js", "index.js"],
  "model": ["feedloop-default.onnx"],
};

const measure = (bytes) => ({
  raw: bytes.length,
  gzip: gzipSync(bytes, { level: 9 }).length,
  brotli: brotliCompressSync(bytes, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }).length,
});

const report = {};
for (const [group, files] of Object.entries(groups)) {
  const total = { raw: 0, gzip: 0, brotli: 0 };
  report[group] = { files: {} };
  for (const file of files) {
    const m = measure(readFileSync(new URL(file, dir)));
    report[group].files[file] = m;
    for (const k of Object.keys(total)) total[k] += m[k];
  }
  report[group].total = total;
}

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log("group      file                        raw          gzip         brotli");
for (const [group, { files, total }] of Object.entries(report)) {
  for (const [file, m] of Object.entries(files)) {
    console.log(`${group.padEnd(10)} ${file.padEnd(26)} ${kb(m.raw).padStart(12)} ${kb(m.gzip).padStart(12)} ${kb(m.brotli).padStart(12)}`);
  }
  console.log(`${group.padEnd(10)} ${"TOTAL".padEnd(26)} ${kb(total.raw).padStart(12)} ${kb(total.gzip).padStart(12)} ${kb(total.brotli).padStart(12)}`);
}
mkdirSync(new URL("../target/bench/", import.meta.url), { recursive: true });
writeFileSync(new URL("../target/bench/size.json", import.meta.url), JSON.stringify(report, null, 2));
