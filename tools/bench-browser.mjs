#!/usr/bin/env node
// Runs the in-browser benchmark (www/dist/bench.html) in headless Chromium and prints its JSON.
// Builds nothing: run `npx webpack --mode production` first.
//
//   node tools/bench-browser.mjs            # 100 timed runs per size → target/bench/browser.json
//   node tools/bench-browser.mjs --smoke    # 5 runs, a quick check → target/bench/browser-smoke.json
//   options: --runs N  --warmup N  --out FILE  --timeout SECONDS
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
    warmup: { type: "string" },
    out: { type: "string" },
    timeout: { type: "string", default: "600" },
    dist: { type: "string", default: path.join(root, "www/dist") },
  },
});

const runs = args.runs ?? (args.smoke ? "5" : "100");
const out = path.resolve(args.out ?? path.join(root, "target/bench", args.smoke ? "browser-smoke.json" : "browser.json"));
const timeoutMs = Number(args.timeout) * 1000;

function fail(message) {
  console.error(`bench-browser: ${message}`);
  process.exit(1);
}

if (!existsSync(path.join(args.dist, "bench.html"))) {
  fail(`${path.join(args.dist, "bench.html")} is missing: build it first with \`npx webpack --mode production\`.`);
}

const query = new URLSearchParams({ runs });
if (args.warmup) query.set("warmup", args.warmup);
if (args.smoke) {
  query.set("events", "500");
  query.set("draws", "20000");
}

const server = await serve(args.dist, 0);
const browser = await launchChromium();
const problems = [];
let results;
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") {
        problems.push(`console error: ${message.text()} (${message.location()?.url || "no url"})`);
      }
  });
  const url = new URL(`bench.html?${query}`, server.url).href;
  console.error(`bench-browser: ${url}`);
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, {
    timeout: timeoutMs,
    polling: 250,
  });
  results = await page.evaluate(() => window.feedloopBench);
  results.browser = { name: "chromium", version: browser.version(), headless: true };
  results.smoke = args.smoke;
} finally {
  await browser.close();
  await server.close();
}

if (results.error || problems.length > 0) {
  fail(`the benchmark failed: ${[results.error, ...problems].filter(Boolean).join("; ")}`);
}

const json = JSON.stringify(results, null, 2);
console.log(json);
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, json + "\n");

const r100 = results.rank?.[100];
const fb = results.feedback;
console.error(
  `bench-browser: cold start ${results.coldStart.coldStartMs} ms` +
    (r100 ? `, 100 candidates median ${r100.median} ms (p10 ${r100.p10}, p90 ${r100.p90})` : "") +
    (fb
      ? `, recordFeedback → re-ranked 100 median ${fb.recordAndRerank100.median} ms, ` +
        `state after ${fb.events} events ${fb.persistedStateBytes} bytes`
      : "") +
    (results.privacy
      ? `, discrete Gaussian σ=10 ${results.privacy.sampler[10].samplesPerSecond} samples/s, ` +
        `privatize d=1k ${results.privacy.privatize[1000].median} ms, d=100k ${results.privacy.privatize[100000].median} ms, ` +
        `secure seal d=131 ${results.privacy.seal[131].median} ms (${results.privacy.seal[131].bytes} B), ` +
        `d=10k ${results.privacy.seal[10000].median} ms (${results.privacy.seal[10000].bytes} B)`
      : "") +
    ` → ${path.relative(process.cwd(), out) || out}`,
);
