#!/usr/bin/env node
// Runs www/dist/gpu-bench.html in headless Chromium on SwiftShader (a real WebGPU adapter in
// software): catalog scoring on the CPU path and on WebGPU at 1, 100, 10k and 100k entries, medians,
// and the largest GPU–CPU difference (the page fails above 1e-5 relative). Prints a Markdown table
// and writes the JSON. Builds nothing: run `npx webpack --mode production` first.
//
//   node tools/bench-gpu-browser.mjs           # 20 timed runs per size (5 at 100k)
//   node tools/bench-gpu-browser.mjs --smoke   # 1 and 100 entries, 2 runs: a quick check
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { launchChromium } from "./chromium.mjs";
import { serve } from "./serve-static.mjs";

const root = fileURLToPath(new URL("../", import.meta.url));
const { values: args } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    runs: { type: "string" },
    out: { type: "string" },
    timeout: { type: "string", default: "900" },
    dist: { type: "string", default: path.join(root, "www/dist") },
  },
});

function fail(message) {
  console.error(`bench-gpu-browser: ${message}`);
  process.exit(1);
}

if (!existsSync(path.join(args.dist, "gpu-bench.html"))) {
  fail(`${path.join(args.dist, "gpu-bench.html")} is missing: build it first with \`npx webpack --mode production\`.`);
}
const query = new URLSearchParams({ runs: args.runs ?? (args.smoke ? "2" : "20") });
if (args.smoke) query.set("sizes", "1,100");
const out = path.resolve(args.out ?? path.join(root, "target/bench", args.smoke ? "gpu-browser-smoke.json" : "gpu-browser.json"));

const server = await serve(args.dist, 0);
const browser = await launchChromium({ webgpu: true });
const problems = [];
let results;
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  await page.goto(new URL(`gpu-bench.html?${query}`, server.url).href, { waitUntil: "load" });
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, {
    timeout: Number(args.timeout) * 1000,
    polling: 250,
  });
  results = await page.evaluate(() => window.feedloopGpuBench);
  results.browser = { name: "chromium", version: browser.version(), flags: "--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader" };
} finally {
  await browser.close();
  await server.close();
}
if (results.error || problems.length > 0) {
  fail(`the benchmark failed: ${[results.error, ...problems].filter(Boolean).join("; ")}`);
}
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(results, null, 2) + "\n");

console.log(`Chromium ${results.browser.version}, adapter: ${results.adapter}, D = ${results.dimensions}\n`);
console.log("| candidates | runs | CPU (median) | WebGPU (median) | CPU /s | WebGPU /s | GPU / CPU | max rel. diff |");
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of results.rows) {
  console.log(
    `| ${r.candidates.toLocaleString("en")} | ${r.runs} | ${r.cpuMs} ms | ${r.gpuMs} ms | ` +
      `${r.cpuPerSecond.toLocaleString("en")} | ${r.gpuPerSecond.toLocaleString("en")} | ${r.gpuOverCpu}× | ${r.maxRelativeDifference.toExponential(1)} |`,
  );
}
console.error(`bench-gpu-browser: → ${path.relative(process.cwd(), out)}`);
