// feedloop — the npm package entry. It initializes the wasm module once, fetches the bundled
// default model (or yours), and hands back a Ranker. Everything else happens in Rust.
//
// Files are located with `new URL(..., import.meta.url)`, which webpack 5, Vite, Rollup and a plain
// <script type="module"> all resolve, so no path has to be hosted or configured by hand.

import initWasm, { WasmRanker, sampleDiscreteGaussian, privatizeBenchmarkUpdate } from "./feedloop_wasm.js";

const WASM_URL = new URL("./feedloop_wasm_bg.wasm", import.meta.url);
const DEFAULT_MODEL_URL = new URL("./feedloop-default.onnx", import.meta.url);

let wasmReady = null;

function isFileUrl(url) {
  return url instanceof URL && url.protocol === "file:";
}

// Node has no fetch() for file: URLs; read those from disk. `webpackIgnore` keeps bundlers from
// trying to pack node:fs into a browser build.
async function readFileUrl(url) {
  const fs = await import(/* webpackIgnore: true */ "node:fs/promises");
  return new Uint8Array(await fs.readFile(url));
}

function initialize() {
  if (!wasmReady) {
    wasmReady = (async () => {
      const source = isFileUrl(WASM_URL) ? await readFileUrl(WASM_URL) : WASM_URL;
      await initWasm({ module_or_path: source });
    })();
    wasmReady.catch(() => {
      wasmReady = null; // let a later create() retry, e.g. after a network error
    });
  }
  return wasmReady;
}

async function modelBytes(model) {
  if (model === undefined || model === null) return fetchBytes(DEFAULT_MODEL_URL);
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model);
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer, model.byteOffset, model.byteLength);
  if (typeof model === "string" || model instanceof URL) {
    const base = typeof location !== "undefined" ? location.href : import.meta.url;
    return fetchBytes(new URL(model, base));
  }
  throw new TypeError(
    `feedloop: options.model must be a Uint8Array, an ArrayBuffer, a URL or a URL string, got ${describe(model)}`,
  );
}

async function fetchBytes(url) {
  if (isFileUrl(url)) return readFileUrl(url);
  let response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw new Error(`feedloop: could not fetch the model from ${url}: ${cause.message}`, { cause });
  }
  if (!response.ok) {
    throw new Error(`feedloop: could not fetch the model from ${url}: HTTP ${response.status}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? value.constructor?.name ?? "object" : typeof value;
}

const DEFAULT_STORAGE = "feedloop";

/** Benchmark helpers (not needed by applications): exact sampler draws and one privatization. */
export const diagnostics = {
  async sampleDiscreteGaussian(sigma, count) {
    await initialize();
    return sampleDiscreteGaussian(sigma, count);
  },
  async privatizeBenchmarkUpdate(dimension) {
    await initialize();
    return privatizeBenchmarkUpdate(dimension);
  },
};

/**
 * Ranks candidates for a context with an on-device reward model and learns from the user's feedback.
 *
 * Events (it is an EventTarget):
 * - `feedback`: `event.detail` is the FeedbackOutcome of every recorded event (also implicit ones).
 * - `error`: `event.error` is an Error, e.g. a storage failure; the ranker keeps working in memory and
 *   retries on the next change, so nothing is dropped.
 * - `saved`: `event.detail.revision` after the state was durably written to IndexedDB.
 */
export class Ranker extends EventTarget {
  #inner;
  #storage;
  #saving = null;
  #dirty = false;
  #lastError = null;
  #onHidden = null;
  #server = null;
  #syncing = null;
  #syncTimer = null;
  #syncEvery = 0;
  #onOnline = null;

  /** Use `await Ranker.create()`; the constructor is not public API. */
  constructor(inner, storage = null) {
    super();
    if (!(inner instanceof WasmRanker)) {
      throw new TypeError("feedloop: use `await Ranker.create()` to make a Ranker");
    }
    this.#inner = inner;
    this.#storage = storage;
    if (storage && typeof document !== "undefined") {
      // Save before the page may be discarded; hand queued uploads to sendBeacon.
      this.#onHidden = () => {
        if (!document.hidden) return;
        this.#scheduleSave();
        if (this.#server) this.#beacon();
      };
      document.addEventListener("visibilitychange", this.#onHidden);
    }
  }

  /**
   * Loads the wasm module (once), a model (the bundled default, or `options.model`: bytes or a URL)
   * and, in browsers, what this device learned before (IndexedDB database `options.storage`,
   * default "feedloop"; `false` keeps everything in memory).
   */
  static async create(options = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`feedloop: Ranker.create(options) takes an object, got ${describe(options)}`);
    }
    const known = ["model", "storage", "weights", "learning", "privacy", "server", "sync", "gpu"];
    for (const key of Object.keys(options)) {
      if (!known.includes(key)) {
        throw new TypeError(`feedloop: unknown option \`${key}\`; expected one of ${known.join(", ")}`);
      }
    }
    const [bytes] = await Promise.all([modelBytes(options.model), initialize()]);
    const learning = {};
    if (options.weights !== undefined) learning.weights = options.weights;
    if (options.learning !== undefined) learning.learning = options.learning;
    if (options.privacy !== undefined) learning.privacy = options.privacy;
    const inner = WasmRanker.withOptions(bytes, learning);
    const storage = storageName(options.storage);
    const sync = syncOptions(options.sync);
    if (options.server !== undefined && !storage) {
      throw new Error("feedloop: syncing with a server needs persistent storage (IndexedDB) for the privacy budget");
    }
    const gpu = options.gpu === undefined ? "auto" : options.gpu === false ? "off" : options.gpu;
    if (!["auto", "always", "off"].includes(gpu)) {
      throw new TypeError(`feedloop: options.gpu must be "auto", "always", "off" or false, got ${describe(options.gpu)}`);
    }
    const ranker = new Ranker(inner, storage);
    // "always" requests a WebGPU adapter now, "auto" at the first catalog large enough to use one;
    // without one, the CPU path (never an error).
    await inner.setGpu(gpu);
    if (storage) {
      try {
        await inner.restore(storage);
      } catch (error) {
        // Listeners are attached after create() resolves: report on the next task.
        setTimeout(() => ranker.#report(error), 0);
      }
    }
    if (options.server !== undefined) {
      inner.beacon(storage, options.server); // validates the server options now (sends nothing yet)
      ranker.#server = options.server;
      if (sync.intervalMs > 0) ranker.#startSync(sync.intervalMs);
    }
    return ranker;
  }

  /**
   * Candidates best first: `[{ id, index, score }, ...]`. Candidates are strings (the id is the
   * text) or `{ id, text }` objects; feedback names them by id.
   */
  rank(context, candidates) {
    const { ids, texts } = splitCandidates(candidates);
    const scores = this.#score(context, ids, texts);
    // Best first; ties keep input order; NaN (which finite inputs cannot produce) last.
    const order = Array.from(scores.keys()).sort((a, b) => {
      const sa = scores[a];
      const sb = scores[b];
      if (Number.isNaN(sa) || Number.isNaN(sb)) return Number.isNaN(sa) - Number.isNaN(sb) || a - b;
      return sb - sa || a - b;
    });
    return order.map((index) => ({ id: ids[index], index, score: scores[index] }));
  }

  /** One personal score per candidate, in input order. */
  score(context, candidates) {
    const { ids, texts } = splitCandidates(candidates);
    return this.#score(context, ids, texts);
  }

  // Each list crosses into wasm as one joined string and the JS length of every piece.
  #score(context, ids, texts) {
    const lengths = (list) => Uint32Array.from(list, (s) => s.length);
    return this.#inner.scoreCandidates(context, ids.join(""), lengths(ids), texts.join(""), lengths(texts));
  }

  /**
   * Global-head scores straight from token ids (no tokenizer, no cache): the same work an ONNX
   * runtime does with this model, for like-for-like benchmarks.
   */
  scoreTokenIds(contextIds, candidateIds) {
    if (!(contextIds instanceof Uint32Array)) {
      throw new TypeError(`feedloop: contextIds must be a Uint32Array, got ${describe(contextIds)}`);
    }
    if (!Array.isArray(candidateIds)) {
      throw new TypeError(`feedloop: candidateIds must be an array of Uint32Array, got ${describe(candidateIds)}`);
    }
    // One flat buffer and the lengths: two copies into wasm memory instead of one per candidate.
    const lengths = new Uint32Array(candidateIds.length);
    let total = 0;
    candidateIds.forEach((ids, i) => {
      if (!(ids instanceof Uint32Array)) {
        throw new TypeError(`feedloop: candidateIds[${i}] must be a Uint32Array, got ${describe(ids)}`);
      }
      lengths[i] = ids.length;
      total += ids.length;
    });
    const flat = new Uint32Array(total);
    let offset = 0;
    for (const ids of candidateIds) {
      flat.set(ids, offset);
      offset += ids.length;
    }
    return this.#inner.scoreTokenIds(contextIds, flat, lengths);
  }

  /**
   * Embeds texts once into a flat catalog `{ dimensions, vectors, tokenCounts }` to score many times
   * with `scoreCatalog` (embedding is the expensive part; keep the catalog).
   */
  embedCatalog(texts) {
    return this.#inner.embedCatalog(texts);
  }

  /**
   * Personal scores of every catalog entry for `context`, in catalog order. Large catalogs run on
   * WebGPU where `options.gpu` allows it (a hardware adapter from 1024 entries with "auto"), the
   * CPU otherwise or if the GPU fails; the numbers agree to 1e-5 relative. `backend` says which ran.
   */
  async scoreCatalog(context, catalog) {
    if (catalog === null || typeof catalog !== "object" || !(catalog.vectors instanceof Float32Array) ||
        !(catalog.tokenCounts instanceof Uint32Array)) {
      throw new TypeError(
        `feedloop: scoreCatalog needs a catalog from embedCatalog ({ vectors: Float32Array, tokenCounts: Uint32Array }), got ${describe(catalog)}`,
      );
    }
    return this.#inner.scoreCatalog(context, catalog.vectors, catalog.tokenCounts);
  }

  /** The backend of the most recent `scoreCatalog`: "webgpu" or "cpu". */
  get backend() {
    return this.#inner.backend;
  }

  /**
   * The WebGPU adapter catalog scoring may use (name, hardware or software), or null (none, or not
   * requested yet: "auto" requests one at the first catalog of 1024 entries or more).
   */
  get gpuAdapter() {
    return this.#inner.gpuAdapter ?? null;
  }

  /**
   * Changes when catalog scoring may use the GPU ("auto", "always", "off"); resolves to the
   * adapter's description or null.
   */
  async setGpu(mode) {
    return this.#inner.setGpu(mode === false ? "off" : mode);
  }

  /** One L2-normalized Float32Array per text. */
  embed(texts) {
    return this.#inner.embed(texts);
  }

  /** Token ids the model sees for a text (truncated at `info.maxTokens`). */
  tokenize(text) {
    return this.#inner.tokenize(text);
  }

  /** Facts about the loaded model. */
  get info() {
    return this.#inner.info;
  }

  /**
   * Records a feedback event and learns from it at once (rank again to see the change); saved in
   * the background. Throws an Error for a malformed event or a candidate that was never ranked.
   */
  recordFeedback(event) {
    const outcome = this.#inner.recordFeedback(event);
    this.#changed(outcome);
    return outcome;
  }

  /** Thumbs up (`up = true`) or down for a candidate. */
  thumbs(candidate, up) {
    return this.recordFeedback({ kind: "thumbs", candidate, up });
  }

  /** The user prefers `winner` over `loser` ("A or B"). */
  choose(winner, loser) {
    return this.recordFeedback({ kind: "pairwise", winner, loser });
  }

  /** The user rewrote a candidate: the new text is preferred over the original. */
  correct(candidate, text) {
    return this.recordFeedback({ kind: "correction", candidate, text });
  }

  /** A star rating, 1 to 5. */
  rate(candidate, stars) {
    return this.recordFeedback({ kind: "stars", candidate, stars });
  }

  /** Flags a candidate: "wrong", "harmful" or "off-topic". */
  flag(candidate, category) {
    return this.recordFeedback({ kind: "flag", candidate, category });
  }

  /** Records clicks, copies and dwell on `element` as implicit feedback about `candidate`. */
  observe(element, candidate) {
    this.#inner.observe(element, candidate, (result) => {
      if (result instanceof Error) this.#report(result);
      else this.#changed(result);
    });
  }

  /** Stops observing `element`; returns whether it was observed. */
  unobserve(element) {
    return this.#inner.unobserve(element);
  }

  /** The parts of a candidate's score and how sure the model is. */
  explain(candidate) {
    return this.#inner.explain(candidate);
  }

  /** Recent feedback on this device, oldest first (local only). */
  activity() {
    return this.#inner.activity();
  }

  /** What this device learned: the delta from the global head and the example count. */
  learningState() {
    return this.#inner.learningState();
  }

  /** The personal state's bytes, exactly as saved to IndexedDB. */
  stateBytes() {
    return this.#inner.stateBytes();
  }

  /** Forgets what this device learned (and saves that). */
  resetLearning() {
    this.#inner.resetLearning();
    this.#scheduleSave();
  }

  /** The privacy policy, what has been spent and remains, and the ledger of every release. */
  privacyReport() {
    return this.#inner.privacyReport();
  }

  /** The ledger as JSON (check it with `feedloop privacy verify-ledger`). */
  exportLedger() {
    return this.#inner.exportLedger();
  }

  /**
   * The next upload for a round, exactly as it would leave the device (bytes and decoded form),
   * before anything is sent. Throws if the round's noise is weaker than the policy allows, the
   * budget cannot pay for it, or it is for another model version.
   */
  inspectNextUpload(round) {
    return this.#inner.inspectNextUpload(round);
  }

  /**
   * Charges the budget for the inspected upload, records it in the ledger, saves both durably and
   * then resolves with the bytes to send. Needs IndexedDB: spending must survive a reload.
   */
  async releaseNextUpload(round) {
    if (!this.#storage) {
      throw new Error("feedloop: releasing an update needs persistent storage (IndexedDB) for the privacy budget");
    }
    return this.#inner.releaseNextUpload(this.#storage, round);
  }

  /**
   * Syncs with the server now (see `options.server`): adopts a newer global model, contributes a
   * privatized update to the open round when something new was learned and the budget allows it,
   * and delivers queued uploads. Resolves with a report (also dispatched as a `sync` event); an
   * unreachable server gives `offline: true`, and the uploads wait, with backoff, for the next sync.
   */
  async sync() {
    if (!this.#server) throw new Error("feedloop: sync needs Ranker.create({ server: { url, deploymentKey } })");
    if (this.#syncing) return this.#syncing;
    this.#syncing = (async () => {
      try {
        await this.flush(); // what was learned is saved before it is contributed
        const report = await this.#inner.sync(this.#storage, this.#server);
        this.dispatchEvent(new CustomEvent("sync", { detail: report }));
        return report;
      } catch (error) {
        this.#report(error);
        throw error;
      } finally {
        this.#syncing = null;
      }
    })();
    return this.#syncing;
  }

  /** Uploads waiting to be delivered (already privatized and in the ledger). */
  pendingUploads() {
    return this.#inner.pendingUploads();
  }

  /** The global model version the personal head builds on ("bundled" before the first sync). */
  get modelVersion() {
    return this.#inner.modelVersion;
  }

  /** Stops the automatic sync schedule (manual `sync()` still works). */
  stopSync() {
    clearTimeout(this.#syncTimer);
    this.#syncTimer = null;
    this.#syncEvery = 0;
    if (this.#onOnline && typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.#onOnline);
    }
    this.#onOnline = null;
  }

  #startSync(intervalMs) {
    this.#syncEvery = intervalMs;
    const tick = async () => {
      try {
        await this.sync();
      } catch {
        // reported as an `error` event by sync()
      }
      if (this.#syncEvery) {
        // ±20 % jitter: devices that start together do not sync together.
        const next = this.#syncEvery * (0.8 + 0.4 * Math.random());
        this.#syncTimer = setTimeout(tick, next);
      }
    };
    this.#syncTimer = setTimeout(tick, 0);
    if (typeof globalThis.addEventListener === "function") {
      this.#onOnline = () => this.sync().catch(() => {});
      globalThis.addEventListener("online", this.#onOnline);
    }
  }

  #beacon() {
    try {
      this.#inner.beacon(this.#storage, this.#server);
    } catch (error) {
      this.#report(error);
    }
  }

  /** Where the state is kept: `{ name, persistent, lastError }`. */
  get storage() {
    return { name: this.#storage, persistent: Boolean(this.#storage), lastError: this.#lastError };
  }

  /** Resolves once everything recorded so far is saved (or the save failed and was reported). */
  async flush() {
    this.#scheduleSave();
    while (this.#saving) await this.#saving;
  }

  #changed(outcome) {
    this.dispatchEvent(new CustomEvent("feedback", { detail: outcome }));
    this.#scheduleSave();
  }

  #scheduleSave() {
    if (!this.#storage) return;
    this.#dirty = true;
    if (this.#saving) return;
    this.#saving = (async () => {
      await Promise.resolve(); // coalesce the events of one task into one write
      while (this.#dirty) {
        this.#dirty = false;
        try {
          const revision = await this.#inner.save(this.#storage);
          this.#lastError = null;
          this.dispatchEvent(new CustomEvent("saved", { detail: { revision } }));
        } catch (error) {
          this.#dirty = true; // still unsaved: the next change (or flush) tries again
          this.#report(error);
          break;
        }
      }
      this.#saving = null;
    })();
  }

  #report(error) {
    this.#lastError = error;
    const event = new Event("error");
    event.error = error;
    this.dispatchEvent(event);
  }

  /** Frees the wasm memory held by this ranker; it cannot be used afterwards. */
  free() {
    this.stopSync();
    if (this.#onHidden) document.removeEventListener("visibilitychange", this.#onHidden);
    this.#inner.free();
  }

  [Symbol.dispose]() {
    this.free();
  }
}

/**
 * Parallel arrays of ids and texts. Strings are their own ids; a repeated string gets `text#2`,
 * `text#3`, ... (the same rule as the wasm layer's `rank`).
 */
function splitCandidates(candidates) {
  if (!Array.isArray(candidates)) {
    throw new Error(`feedloop: candidates must be an array of strings or { id, text } objects, got ${typeName(candidates)}`);
  }
  const ids = new Array(candidates.length);
  const texts = new Array(candidates.length);
  const seen = new Map();
  candidates.forEach((candidate, i) => {
    if (typeof candidate === "string") {
      const n = (seen.get(candidate) ?? 0) + 1;
      seen.set(candidate, n);
      ids[i] = n === 1 ? candidate : `${candidate}#${n}`;
      texts[i] = candidate;
    } else if (candidate !== null && typeof candidate === "object" && !Array.isArray(candidate)) {
      if (typeof candidate.id !== "string" || typeof candidate.text !== "string") {
        throw new Error(
          `feedloop: candidates[${i}] must be { id, text } with string id and text, got id ${typeName(candidate.id)} and text ${typeName(candidate.text)}`,
        );
      }
      ids[i] = candidate.id;
      texts[i] = candidate.text;
    } else {
      throw new Error(`feedloop: candidates[${i}] must be a string or { id, text }, got ${typeName(candidate)}`);
    }
  });
  return { ids, texts };
}

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

function syncOptions(option) {
  if (option === undefined) return { intervalMs: 60_000 };
  if (option === null || typeof option !== "object") {
    throw new TypeError(`feedloop: options.sync must be { intervalMs }, got ${describe(option)}`);
  }
  for (const key of Object.keys(option)) {
    if (key !== "intervalMs") throw new TypeError(`feedloop: unknown sync option \`${key}\`; expected intervalMs`);
  }
  const intervalMs = option.intervalMs ?? 60_000;
  if (typeof intervalMs !== "number" || !(intervalMs === 0 || intervalMs >= 1000)) {
    throw new TypeError(`feedloop: sync.intervalMs must be 0 (manual sync only) or at least 1000, got ${describe(intervalMs)}`);
  }
  return { intervalMs };
}

function storageName(option) {
  if (option === false || option === null) return null;
  if (option === undefined) return WasmRanker.storageAvailable() ? DEFAULT_STORAGE : null;
  if (typeof option === "string" && option.length > 0) return option;
  throw new TypeError(`feedloop: options.storage must be a database name or false, got ${describe(option)}`);
}
