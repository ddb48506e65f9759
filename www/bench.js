// In-page benchmark for feedloop. Must stay the first statement: the cold start is measured from
// here (the start of this module's body; the package's own module body only defines functions).
const moduleStart = performance.now();

import { Ranker, diagnostics } from "feedloop";
import { SAMPLES, candidatePool } from "./samples.js";

const params = new URLSearchParams(location.search);
const positiveInt = (name, fallback) => {
  const value = Number.parseInt(params.get(name) ?? "", 10);
  return Number.isFinite(value) && value > 0 ? value : fallback;
};
const RUNS = positiveInt("runs", 100);
const WARMUP = positiveInt("warmup", Math.min(10, RUNS));
const SIZES = (params.get("sizes") ?? "1,32,100")
  .split(",")
  .map((s) => Number.parseInt(s, 10))
  .filter((n) => Number.isFinite(n) && n > 0);

const statusLine = document.getElementById("status");
const resultsBox = document.getElementById("results");
const errorBox = document.getElementById("error");

const round = (x, digits = 3) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

// Linear interpolation between closest ranks (numpy's default).
function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function summarize(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  return {
    runs: samples.length,
    median: round(quantile(sorted, 0.5)),
    p10: round(quantile(sorted, 0.1)),
    p90: round(quantile(sorted, 0.9)),
    mean: round(mean),
    min: round(sorted[0]),
    max: round(sorted[sorted.length - 1]),
  };
}

function resourceTiming(fragment) {
  const entry = performance
    .getEntriesByType("resource")
    .find((e) => e.name.includes(fragment));
  if (!entry) return null;
  return {
    url: new URL(entry.name).pathname,
    startMs: round(entry.startTime),
    durationMs: round(entry.duration),
    transferBytes: entry.transferSize,
    decodedBytes: entry.decodedBodySize,
  };
}

// Texts never seen before, so every ranking runs the model (the ranker caches embeddings by text).
let freshRun = 0;
function freshPool(count) {
  freshRun += 1;
  return candidatePool(count).map((text) => `${text} [${freshRun}]`);
}

/** `fresh`: new texts every run (tokenize + embed + score); otherwise the same texts (cached). */
async function benchSize(ranker, count, fresh) {
  const questions = SAMPLES.map((s) => s.question);
  const same = candidatePool(count);
  let sink = 0; // keep results alive so nothing is optimized away
  for (let i = 0; i < WARMUP; i++) {
    sink += ranker.rank(questions[i % questions.length], fresh ? freshPool(count) : same)[0].score;
  }
  const times = [];
  for (let i = 0; i < RUNS; i++) {
    const question = questions[i % questions.length];
    const candidates = fresh ? freshPool(count) : same;
    const start = performance.now();
    const ranking = ranker.rank(question, candidates);
    times.push(performance.now() - start);
    sink += ranking[0].score;
    if (ranking.length !== count) throw new Error(`expected ${count} ranked candidates, got ${ranking.length}`);
    if (i % 20 === 19) await nextTask(); // let the page breathe (status updates, test harness)
  }
  const stats = summarize(times);
  return {
    candidates: count,
    warmup: WARMUP,
    ...stats,
    candidatesPerSecond: round((count * 1000) / stats.median, 0),
    checksum: round(sink, 4),
  };
}

const EVENTS = positiveInt("events", 10_000);
const FEEDBACK_KINDS = [
  (id) => ({ kind: "thumbs", candidate: id, up: false }),
  (id) => ({ kind: "stars", candidate: id, stars: 4 }),
  (id) => ({ kind: "click", candidate: id }),
  (id) => ({ kind: "copy", candidate: id }),
  (id) => ({ kind: "dwell", candidate: id, ms: 6000 }),
];

/**
 * The time from recordFeedback to the re-ranked list of 100 candidates (learning + ranking from the
 * cached features), and the persisted state's size after EVENTS events on as many candidates.
 */
async function benchFeedback() {
  const ranker = await Ranker.create({ storage: false });
  const question = SAMPLES[0].question;
  const candidates = candidatePool(100).map((text, i) => ({ id: `c${i}`, text }));
  ranker.rank(question, candidates);
  const times = [];
  let moved = 0;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const top = ranker.rank(question, candidates)[0].id;
    const start = performance.now();
    ranker.recordFeedback({ kind: "thumbs", candidate: top, up: false });
    const ranking = ranker.rank(question, candidates);
    const elapsed = performance.now() - start;
    if (i >= WARMUP) times.push(elapsed);
    if (ranking[0].id !== top) moved += 1;
    if (i % 20 === 19) await nextTask();
  }
  ranker.free();

  // State size: EVENTS events, one per candidate (the per-candidate cap never bites).
  const big = await Ranker.create({ storage: false });
  const pool = candidatePool(EVENTS).map((text, i) => ({ id: `e${i}`, text }));
  for (let i = 0; i < pool.length; i += 100) {
    big.rank(SAMPLES[(i / 100) % SAMPLES.length].question, pool.slice(i, i + 100));
    if (i % 2000 === 0) await nextTask();
  }
  const recordStart = performance.now();
  for (let i = 0; i < EVENTS; i++) big.recordFeedback(FEEDBACK_KINDS[i % FEEDBACK_KINDS.length](pool[i].id));
  const recordMs = performance.now() - recordStart;
  const stateBytes = big.stateBytes ? big.stateBytes().length : null;
  big.free();
  return {
    recordAndRerank100: { ...summarize(times), warmup: WARMUP, topMovedFraction: round(moved / (WARMUP + RUNS)) },
    events: EVENTS,
    recordMeanMs: round(recordMs / EVENTS, 4),
    persistedStateBytes: stateBytes,
  };
}

const DRAWS = positiveInt("draws", 1_000_000);

/** Exact discrete Gaussian samples/s (the release build) and the time to privatize one update. */
async function benchPrivacy() {
  const sampler = {};
  for (const sigma of [1, 10, 1000]) {
    await diagnostics.sampleDiscreteGaussian(sigma, 1000); // warm-up
    const start = performance.now();
    const draws = await diagnostics.sampleDiscreteGaussian(sigma, DRAWS);
    const seconds = (performance.now() - start) / 1000;
    let sum = 0;
    let squares = 0;
    for (const x of draws) {
      sum += x;
      squares += x * x;
    }
    const mean = sum / draws.length;
    sampler[sigma] = {
      draws: draws.length,
      samplesPerSecond: round(draws.length / seconds, 0),
      mean: round(mean, 4),
      stddev: round(Math.sqrt(squares / draws.length - mean * mean), 4),
    };
    await nextTask();
  }
  const privatize = {};
  for (const dimension of [1000, 100_000]) {
    const times = [];
    const runs = dimension > 10_000 ? Math.min(RUNS, 10) : Math.min(RUNS, 50);
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      await diagnostics.privatizeBenchmarkUpdate(dimension);
      times.push(performance.now() - start);
    }
    privatize[dimension] = summarize(times);
    await nextTask();
  }
  // A secure round's device step (clip, round, Prio3 shard, HPKE seal): the model's d = 131 and a
  // large model's d = 10,000, with the report's size.
  const seal = {};
  for (const dimension of [131, 10_000]) {
    const times = [];
    let bytes = 0;
    const runs = dimension > 1000 ? Math.min(RUNS, 10) : Math.min(RUNS, 50);
    await diagnostics.sealBenchmarkReport(dimension); // warm-up
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      bytes = await diagnostics.sealBenchmarkReport(dimension);
      times.push(performance.now() - start);
    }
    seal[dimension] = { ...summarize(times), bytes };
    await nextTask();
  }
  return { sampler, privatize, seal };
}

async function run() {
  const createStart = performance.now();
  const ranker = await Ranker.create();
  const createEnd = performance.now();
  const first = ranker.rank(SAMPLES[0].question, SAMPLES[0].candidates);
  const firstRankEnd = performance.now();

  const info = ranker.info;
  const coldStart = {
    // All values in ms. "*SinceNavigation" values are performance.now() readings, i.e. relative to
    // performance.timeOrigin (navigation start); the others are relative to the module start.
    coldStartMs: round(firstRankEnd - moduleStart),
    createMs: round(createEnd - createStart),
    firstRankMs: round(firstRankEnd - createEnd),
    moduleStartSinceNavigationMs: round(moduleStart),
    createResolvedSinceNavigationMs: round(createEnd),
    firstRankSinceNavigationMs: round(firstRankEnd),
    timeOrigin: performance.timeOrigin,
    firstRankBestIndex: first[0].index,
    firstRankBestIsExpected: first[0].index === SAMPLES[0].best,
  };
  statusLine.textContent = `Cold start ${coldStart.coldStartMs} ms; timing ${RUNS} runs per size…`;

  // Warm every size up before timing any, so the browser's optimizing wasm tier (compiled in the
  // background after the baseline tier) is in place for the first measured size too.
  statusLine.textContent = `Warming up (${WARMUP} runs per size)…`;
  for (const size of SIZES) {
    for (let i = 0; i < WARMUP; i++) ranker.rank(SAMPLES[i % SAMPLES.length].question, freshPool(size));
    await nextTask();
  }

  // `rank`: new texts each run (the model runs); `rerank`: the same texts again (cached embeddings).
  const rank = {};
  const rerank = {};
  for (const size of SIZES) {
    await nextTask();
    statusLine.textContent = `Ranking ${size} candidates, ${RUNS} runs…`;
    rank[size] = await benchSize(ranker, size, true);
    rerank[size] = await benchSize(ranker, size, false);
  }

  await nextTask();
  statusLine.textContent = `Feedback: record + re-rank 100, ${RUNS} runs; state after ${EVENTS} events…`;
  const feedback = await benchFeedback();
  statusLine.textContent = `Privacy: ${DRAWS} exact discrete Gaussian draws per σ, privatizing updates…`;
  const privacy = await benchPrivacy();

  const navigation = performance.getEntriesByType("navigation")[0];
  return {
    kind: "feedloop-browser-bench",
    runs: RUNS,
    warmup: WARMUP,
    coldStart,
    rank,
    rerank,
    feedback,
    privacy,
    resources: {
      wasm: resourceTiming(".wasm"),
      model: resourceTiming(".onnx"),
    },
    page: {
      domContentLoadedSinceNavigationMs: navigation ? round(navigation.domContentLoadedEventEnd) : null,
    },
    model: {
      contractVersion: info.contractVersion,
      dimensions: info.dimensions,
      maxTokens: info.maxTokens,
      vocabSize: info.vocabSize,
      headParameters: info.headParameters,
    },
    environment: {
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
      date: new Date().toISOString(),
    },
  };
}

run().then(
  (results) => {
    window.feedloopBench = results;
    resultsBox.textContent = JSON.stringify(results, null, 2);
    const r100 = results.rank[100];
    statusLine.textContent =
      `Done. Cold start ${results.coldStart.coldStartMs} ms` +
      (r100 ? `; 100 candidates: median ${r100.median} ms (p10 ${r100.p10}, p90 ${r100.p90})` : "") +
      ".";
    document.body.dataset.state = "done";
  },
  (error) => {
    const message = error instanceof Error ? error.message : String(error);
    window.feedloopBench = { kind: "feedloop-browser-bench", error: message };
    errorBox.textContent = `Benchmark failed: ${message}`;
    errorBox.hidden = false;
    statusLine.textContent = "Failed.";
    resultsBox.textContent = JSON.stringify(window.feedloopBench, null, 2);
    document.body.dataset.state = "error";
  },
);
