#!/usr/bin/env node
// feedloop vs ONNX Runtime Web, headless: runs www/dist/compare.html in fresh browser contexts (each
// runtime's cold start measured first in its own fresh page), aggregates medians, measures download
// sizes, and writes BENCHMARKS.md (the browser section) with the date and machine.
// Builds nothing: run `make www` (or `npx webpack --mode production`) first.
//
//   node tools/bench-compare.mjs            # 5 pages per cold-start order, 50 runs → BENCHMARKS.md
//   node tools/bench-compare.mjs --smoke    # 1 page per order, 3 runs → target/bench/compare-smoke.json
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gzipSync, brotliCompressSync, constants } from "node:zlib";
import { launchChromium } from "./chromium.mjs";
import { serve } from "./serve-static.mjs";

const root = fileURLToPath(new URL("../", import.meta.url));
const { values: args } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    pages: { type: "string" },
    runs: { type: "string" },
    dist: { type: "string", default: path.join(root, "www/dist") },
  },
});
const pages = Number(args.pages ?? (args.smoke ? 1 : 5));
const runs = args.runs ?? (args.smoke ? "3" : "50");

function fail(message) {
  console.error(`bench-compare: ${message}`);
  process.exit(1);
}
if (!existsSync(path.join(args.dist, "compare.html"))) fail("www/dist/compare.html is missing: run `make www` first.");

const median = (values) => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const round = (x, digits = 3) => Number(x.toFixed(digits));

const server = await serve(args.dist, 0);
const browser = await launchChromium();
const results = [];
try {
  for (let i = 0; i < pages; i++) {
    for (const cold of ["feedloop", "ort"]) {
      const context = await browser.newContext(); // a fresh cache: a real cold start
      const page = await context.newPage();
      const problems = [];
      page.on("pageerror", (e) => problems.push(e.message));
      await page.goto(`${server.url}compare.html?cold=${cold}&runs=${runs}`);
      await page.waitForFunction(() => window.feedloopCompare !== undefined, null, { timeout: 600_000 });
      const result = await page.evaluate(() => window.feedloopCompare);
      await context.close();
      if (result.error || problems.length) fail(`${cold}: ${[result.error, ...problems].filter(Boolean).join("; ")}`);
      results.push(result);
      console.error(`bench-compare: page ${i + 1}/${pages}, cold ${cold}: ${JSON.stringify(result.coldStartMs)}`);
    }
  }
} finally {
  await browser.close();
  await server.close();
}

const sizes = {};
for (const size of [1, 32, 100]) {
  const f = median(results.map((r) => r.sizes[size].feedloopMedianMs));
  const o = median(results.map((r) => r.sizes[size].ortMedianMs));
  sizes[size] = { feedloopMs: round(f), ortMs: round(o), ratio: round(f / o) };
}
const callsPerSample = [1, 32, 100]
  .map((size) => {
    const reps = results.map((r) => r.sizes[size].callsPerSample);
    const [low, high] = [Math.min(...reps), Math.max(...reps)];
    return `${low === high ? low : `${low}–${high}`} (${size} candidate${size === 1 ? "" : "s"})`;
  })
  .join(", ");
const cold = {
  feedloopMs: round(median(results.filter((r) => r.cold === "feedloop").map((r) => r.coldStartMs.feedloop))),
  ortMs: round(median(results.filter((r) => r.cold === "ort").map((r) => r.coldStartMs.ort))),
};
cold.ratio = round(cold.feedloopMs / cold.ortMs);

const measure = (files) => {
  const total = { raw: 0, gzip: 0, brotli: 0 };
  for (const file of files) {
    const bytes = readFileSync(file);
    total.raw += bytes.length;
    total.gzip += gzipSync(bytes, { level: 9 }).length;
    total.brotli += brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  }
  return total;
};
const download = {
  feedloop: measure(["feedloop_wasm_bg.wasm", "feedloop_wasm.js", "index.js"].map((f) => path.join(root, "pkg", f))),
  ort: measure(
    ["ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs", "ort.wasm.min.mjs"].map((f) =>
      path.join(root, "node_modules/onnxruntime-web/dist", f),
    ),
  ),
};
for (const k of ["raw", "gzip", "brotli"]) download[`ratio_${k}`] = round(download.feedloop[k] / download.ort[k]);

const cpu = os.cpus()[0]?.model ?? "unknown CPU";
const summary = {
  date: new Date().toISOString(),
  machine: `${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
  browser: results[0].userAgent,
  ortWeb: JSON.parse(readFileSync(path.join(root, "node_modules/onnxruntime-web/package.json"), "utf8")).version,
  pages,
  runs: Number(runs),
  sizes,
  cold,
  download,
};
const out = path.join(root, "target/bench", args.smoke ? "compare-smoke.json" : "compare.json");
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ summary, results }, null, 2) + "\n");
console.log(JSON.stringify(summary, null, 2));

if (!args.smoke) {
  const kib = (n) => `${(n / 1024).toFixed(0)} KiB`;
  const check = (ok) => (ok ? "met" : "**missed**");
  const section = `<!-- compare:start -->
## feedloop vs ONNX Runtime Web, in Chromium

${summary.date.slice(0, 10)}, ${summary.machine}; headless ${summary.browser.match(/Chrome\/[\d.]+/)?.[0] ?? "Chromium"};
onnxruntime-web ${summary.ortWeb} (wasm execution provider, 1 thread, no proxy, no COOP/COEP).
The same ONNX file and the same token ids (feedloop's tokenizer) for both; embed + score, timed
alternately in one page; medians of ${pages} fresh pages × ${runs} samples, each sample the mean of
${callsPerSample} back-to-back calls (≥ ~3 ms, since \`performance.now()\` ticks in 0.1 ms here)
(\`node tools/bench-compare.mjs\`). Scores agree to 1e-4 (checked on every run).

| work | feedloop (tract) | ONNX Runtime Web | feedloop / ORT | target |
|---|---|---|---|---|
| embed + score 1 candidate | ${sizes[1].feedloopMs} ms | ${sizes[1].ortMs} ms | ${sizes[1].ratio} | |
| embed + score 32 candidates | ${sizes[32].feedloopMs} ms | ${sizes[32].ortMs} ms | ${sizes[32].ratio} | |
| embed + score 100 candidates | ${sizes[100].feedloopMs} ms | ${sizes[100].ortMs} ms | ${sizes[100].ratio} | ≤ 0.5: ${check(sizes[100].ratio <= 0.5)} |
| cold start: module + model → first result | ${cold.feedloopMs} ms | ${cold.ortMs} ms | ${cold.ratio} | ≤ 0.25: ${check(cold.ratio <= 0.25)} |
| download, wasm + JS, raw | ${kib(download.feedloop.raw)} | ${kib(download.ort.raw)} | ${download.ratio_raw} | |
| download, gzip | ${kib(download.feedloop.gzip)} | ${kib(download.ort.gzip)} | ${download.ratio_gzip} | |
| download, brotli | ${kib(download.feedloop.brotli)} | ${kib(download.ort.brotli)} | ${download.ratio_brotli} | ≤ 0.45: ${check(download.ratio_brotli <= 0.45)} |

Cold start is measured first in a fresh browser context for each runtime (no cached wasm or model):
feedloop = \`Ranker.create\` (wasm fetch + instantiate, model load and constant folding) + first score;
ORT = \`import("ort.wasm.min.mjs")\` + \`InferenceSession.create\` + first \`run\`.
<!-- compare:end -->`;
  const file = path.join(root, "BENCHMARKS.md");
  let text = existsSync(file)
    ? readFileSync(file, "utf8")
    : "# Benchmarks\n\nNumbers from runs on the machine named in each section; regenerate with the commands given.\n\n<!-- compare:start -->\n<!-- compare:end -->\n";
  text = text.replace(/<!-- compare:start -->[\s\S]*<!-- compare:end -->/, section);
  writeFileSync(file, text);
  console.error("bench-compare: BENCHMARKS.md updated");
}
