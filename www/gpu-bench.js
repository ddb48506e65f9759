// CPU vs WebGPU catalog scoring in the page: the same catalog scored alternately with
// `gpu: "off"` and `gpu: "always"`, medians per size, and the largest difference between the two.
import { Ranker } from "feedloop";

const params = new URLSearchParams(location.search);
const RUNS = Math.max(1, Number.parseInt(params.get("runs") ?? "20", 10) || 20);
const SIZES = (params.get("sizes") ?? "1,100,10000,100000")
  .split(",")
  .map((s) => Number.parseInt(s, 10))
  .filter((n) => Number.isFinite(n) && n > 0);
const TOLERANCE = 1e-5;

const statusLine = document.getElementById("status");
const resultsBox = document.getElementById("results");
const errorBox = document.getElementById("error");

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, digits = 3) => Number(x.toFixed(digits));

// A deterministic catalog of unit vectors (xorshift32), like embeddings an app keeps.
function syntheticCatalog(size, dimensions, maxTokens) {
  let state = 0x9e3779b9 ^ size;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32 - 0.5;
  };
  const vectors = new Float32Array(size * dimensions);
  const tokenCounts = new Uint32Array(size);
  for (let i = 0; i < size; i++) tokenCounts[i] = 1 + ((i * 37) % maxTokens);
  // Token ids for the default model's lexical term: ids 1000 + (i·j mod 20000), a fixed pattern.
  const tokenIds = new Uint32Array(tokenCounts.reduce((a, b) => a + b, 0));
  for (let i = 0, k = 0; i < size; i++) {
    for (let j = 0; j < tokenCounts[i]; j++) tokenIds[k++] = 1000 + ((i * 31 + j * 7) % 20000);
  }
  for (let i = 0; i < size; i++) {
    let norm = 0;
    for (let d = 0; d < dimensions; d++) {
      const v = next();
      vectors[i * dimensions + d] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let d = 0; d < dimensions; d++) vectors[i * dimensions + d] /= norm;
  }
  return { dimensions, vectors, tokenCounts, tokenIds };
}

async function timed(ranker, mode, context, catalog) {
  await ranker.setGpu(mode);
  const start = performance.now();
  const scores = await ranker.scoreCatalog(context, catalog);
  return { ms: performance.now() - start, scores, backend: ranker.backend };
}

async function main() {
  const ranker = await Ranker.create({ storage: false, gpu: "always" });
  const adapter = ranker.gpuAdapter;
  if (!adapter) throw new Error("no WebGPU adapter (Chromium needs --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader)");
  const { dimensions, maxTokens } = ranker.info;
  const context = "how do I reset my password?";
  const rows = [];
  for (const size of SIZES) {
    statusLine.textContent = `Scoring ${size} entries…`;
    const catalog = syntheticCatalog(size, dimensions, maxTokens);
    // One untimed call each: pipelines, buffers and caches warm.
    const cpuFirst = await timed(ranker, "off", context, catalog);
    const gpuFirst = await timed(ranker, "always", context, catalog);
    if (cpuFirst.backend !== "cpu" || gpuFirst.backend !== "webgpu") {
      throw new Error(`N = ${size}: expected cpu and webgpu, ran on ${cpuFirst.backend} and ${gpuFirst.backend}`);
    }
    let worst = 0;
    for (let i = 0; i < size; i++) {
      const diff = Math.abs(gpuFirst.scores[i] - cpuFirst.scores[i]) / Math.max(1, Math.abs(cpuFirst.scores[i]));
      worst = Math.max(worst, diff);
    }
    if (!(worst <= TOLERANCE)) throw new Error(`N = ${size}: GPU and CPU scores differ by ${worst} (relative)`);
    const cpu = [];
    const gpu = [];
    const runs = size >= 100000 ? Math.min(RUNS, 5) : RUNS;
    for (let r = 0; r < runs; r++) {
      cpu.push((await timed(ranker, "off", context, catalog)).ms);
      gpu.push((await timed(ranker, "always", context, catalog)).ms);
    }
    const cpuMs = median(cpu);
    const gpuMs = median(gpu);
    rows.push({
      candidates: size,
      runs,
      cpuMs: round(cpuMs),
      gpuMs: round(gpuMs),
      cpuPerSecond: Math.round(size / (cpuMs / 1000)),
      gpuPerSecond: Math.round(size / (gpuMs / 1000)),
      gpuOverCpu: round(gpuMs / cpuMs, 2),
      maxRelativeDifference: worst,
    });
  }
  return { adapter, dimensions, rows };
}

main()
  .then((results) => {
    window.feedloopGpuBench = results;
    resultsBox.textContent = JSON.stringify(results, null, 2);
    statusLine.textContent = "Done.";
    document.body.dataset.state = "done";
  })
  .catch((error) => {
    window.feedloopGpuBench = { error: String(error?.message ?? error) };
    errorBox.hidden = false;
    errorBox.textContent = String(error?.message ?? error);
    statusLine.textContent = "Failed.";
    document.body.dataset.state = "error";
  });
