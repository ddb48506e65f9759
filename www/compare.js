// feedloop vs ONNX Runtime Web on the same page, the same model and the same token ids.
// `?cold=feedloop|ort` says which runtime's cold start is measured (first, in a fresh page); the
// other is then loaded warm-ish and both are timed alternately on embed + score.
const moduleStart = performance.now();

import { Ranker } from "feedloop";
import { SAMPLES, candidatePool } from "./samples.js";

const params = new URLSearchParams(location.search);
const positiveInt = (name, fallback) => {
  const value = Number.parseInt(params.get(name) ?? "", 10);
  return Number.isFinite(value) && value > 0 ? value : fallback;
};
const RUNS = positiveInt("runs", 50);
const WARMUP = positiveInt("warmup", 5);
const COLD = params.get("cold") === "ort" ? "ort" : "feedloop";
const SIZES = [1, 32, 100];
const MODEL_URL = new URL("../pkg/feedloop-default.onnx", import.meta.url);

const statusLine = document.getElementById("status");
const resultsBox = document.getElementById("results");
const errorBox = document.getElementById("error");
const round = (x, digits = 3) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function modelBytes() {
  const response = await fetch(MODEL_URL);
  if (!response.ok) throw new Error(`model: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Loads ONNX Runtime Web (wasm EP, one thread, no proxy) and creates a session. */
async function createOrt(bytes) {
  const ort = await import(/* webpackIgnore: true */ new URL("ort/ort.wasm.min.mjs", location.href).href);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return { ort, session };
}

/** Padded int64 tensors for the graph's inputs, built once per input set (outside the timing). */
function ortInputs(ort, contextIds, candidateIds) {
  const width = Math.max(1, ...candidateIds.map((ids) => ids.length));
  const ids = new BigInt64Array(candidateIds.length * width);
  const mask = new BigInt64Array(candidateIds.length * width);
  candidateIds.forEach((row, i) =>
    row.forEach((id, j) => {
      ids[i * width + j] = BigInt(id);
      mask[i * width + j] = 1n;
    }),
  );
  const cWidth = Math.max(1, contextIds.length);
  const cIds = new BigInt64Array(cWidth);
  const cMask = new BigInt64Array(cWidth);
  contextIds.forEach((id, j) => {
    cIds[j] = BigInt(id);
    cMask[j] = 1n;
  });
  return {
    token_ids: new ort.Tensor("int64", ids, [candidateIds.length, width]),
    attention_mask: new ort.Tensor("int64", mask, [candidateIds.length, width]),
    context_token_ids: new ort.Tensor("int64", cIds, [1, cWidth]),
    context_attention_mask: new ort.Tensor("int64", cMask, [1, cWidth]),
  };
}

async function run() {
  const bytes = await modelBytes();
  const question = SAMPLES[0].question;
  // Token ids always come from feedloop's tokenizer (identical inputs for both runtimes).
  const firstIds = (tokenizer) => [
    Array.from(tokenizer.tokenize(question)),
    [Array.from(tokenizer.tokenize(SAMPLES[0].candidates[0]))],
  ];
  let ranker;
  let ortRuntime;
  const coldStartMs = {};
  statusLine.textContent = `Cold start of ${COLD}…`;
  if (COLD === "feedloop") {
    const start = performance.now();
    ranker = await Ranker.create({ model: bytes, storage: false });
    const [contextIds, candidateIds] = firstIds(ranker);
    ranker.scoreTokenIds(Uint32Array.from(contextIds), candidateIds.map((c) => Uint32Array.from(c)));
    coldStartMs.feedloop = round(performance.now() - start);
    ortRuntime = await createOrt(bytes);
  } else {
    ranker = await Ranker.create({ model: bytes, storage: false }); // the tokenizer, before the timer
    const [contextIds, candidateIds] = firstIds(ranker);
    const start = performance.now();
    ortRuntime = await createOrt(bytes);
    await ortRuntime.session.run(ortInputs(ortRuntime.ort, contextIds, candidateIds));
    coldStartMs.ort = round(performance.now() - start);
  }

  const sizes = {};
  for (const size of SIZES) {
    statusLine.textContent = `Timing ${size} candidates, ${RUNS} runs each, alternating…`;
    const texts = candidatePool(size);
    const contextIds = ranker.tokenize(question);
    const candidateIds = texts.map((t) => ranker.tokenize(t));
    const feeds = ortInputs(ortRuntime.ort, Array.from(contextIds), candidateIds.map((a) => Array.from(a)));
    // Same answer from both (scores to 1e-4), or the comparison would be meaningless.
    const ours = ranker.scoreTokenIds(contextIds, candidateIds);
    const theirs = (await ortRuntime.session.run(feeds)).score.data;
    let worst = 0;
    for (let i = 0; i < size; i++) worst = Math.max(worst, Math.abs(ours[i] - theirs[i]));
    if (!(worst < 1e-4)) throw new Error(`scores differ by ${worst} at ${size} candidates`);
    // performance.now() ticks in 0.1 ms without cross-origin isolation, coarser than one call at
    // these sizes: each sample times `reps` back-to-back calls (≥ ~3 ms) and divides.
    const calibrate = async (call) => {
      const start = performance.now();
      for (let i = 0; i < 20; i++) await call();
      return (performance.now() - start) / 20;
    };
    const callFeedloop = () => ranker.scoreTokenIds(contextIds, candidateIds);
    const callOrt = () => ortRuntime.session.run(feeds);
    const slowest = Math.max(await calibrate(callFeedloop), await calibrate(callOrt), 0.01);
    const reps = Math.min(200, Math.max(1, Math.ceil(3 / slowest)));
    const times = { feedloop: [], ort: [] };
    for (let i = 0; i < WARMUP + RUNS; i++) {
      let start = performance.now();
      for (let r = 0; r < reps; r++) callFeedloop();
      const f = (performance.now() - start) / reps;
      start = performance.now();
      for (let r = 0; r < reps; r++) await callOrt();
      const o = (performance.now() - start) / reps;
      if (i >= WARMUP) {
        times.feedloop.push(f);
        times.ort.push(o);
      }
      await nextTask();
    }
    const fm = median(times.feedloop);
    const om = median(times.ort);
    sizes[size] = {
      feedloopMedianMs: round(fm),
      ortMedianMs: round(om),
      ratio: round(fm / om),
      callsPerSample: reps,
      maxScoreDifference: worst,
    };
  }
  return {
    kind: "feedloop-vs-ort-web",
    cold: COLD,
    coldStartMs,
    sinceModuleStartMs: round(performance.now() - moduleStart),
    runs: RUNS,
    warmup: WARMUP,
    sizes,
    ortVersion: ortRuntime.ort.env.versions?.web ?? null,
    userAgent: navigator.userAgent,
    date: new Date().toISOString(),
  };
}

run().then(
  (results) => {
    window.feedloopCompare = results;
    resultsBox.textContent = JSON.stringify(results, null, 2);
    statusLine.textContent = "Done.";
    document.body.dataset.state = "done";
  },
  (error) => {
    const message = error instanceof Error ? error.message : String(error);
    window.feedloopCompare = { kind: "feedloop-vs-ort-web", error: message };
    errorBox.textContent = `Comparison failed: ${message}`;
    errorBox.hidden = false;
    statusLine.textContent = "Failed.";
    document.body.dataset.state = "error";
  },
);
