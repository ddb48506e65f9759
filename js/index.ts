// feedloop — the npm package entry. It initializes the wasm module once, fetches the bundled
// default model (or yours), and hands back a Ranker. Everything else happens in Rust.
//
// Where the wasm and the model come from, in browsers, bundlers, Workers and Node, is load.ts.
//
// TypeScript (strict), compiled by `tsc -p js` into pkg/ (tools/build-pkg.sh), which also writes the
// package's index.d.ts. The types of what the wasm layer returns come from the wasm-bindgen output
// (`feedloop_wasm.d.ts`, the typescript_custom_section in src/lib.rs), found through `rootDirs`.

/// <reference lib="dom" preserve="true" />
import { WasmRanker, sampleDiscreteGaussian, privatizeBenchmarkUpdate, sealBenchmarkReport } from "./feedloop_wasm.js";
import { describe, initialize, modelBytes } from "./load.js";
import type { ModelSource, WasmSource } from "./load.js";
import type {
  RankedCandidate, CandidateInput, ModelInfo, FeedbackEvent, FeedbackOutcome,
  FlagCategory, Explanation, Activity, LearningState, FeedbackWeights, LearningConfig,
  LearningOptions, PrivacyPolicyOptions, RoundConfig, InspectedUpload, PrivacyReport,
  ServerOptions, SyncReport, PendingUpload, MetricPreview, EmbeddedCatalog,
} from "./feedloop_wasm.js";

export type {
  RankedCandidate, CandidateInput, ModelInfo, FeedbackEvent, FeedbackKind, FeedbackOutcome,
  FlagCategory, Explanation, Activity, LearningState, FeedbackWeights, LearningConfig,
  PrivacyPolicyOptions, RoundConfig, InspectedUpload, PrivacyReport,
  ServerOptions, OpenRound, SettledUpload, SyncReport, MetricReport, PendingUpload, MetricPreview, EmbeddedCatalog,
} from "./feedloop_wasm.js";
export type { ModelSource, WasmSource } from "./load.js";

// `[Symbol.dispose]` (for `using ranker = await Ranker.create()`) without asking projects for the
// ESNext.Disposable lib: the same declaration as that lib and @types/node, which merge with it.
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
  }
}

/** When `scoreCatalog` may use WebGPU. */
export type GpuMode = "auto" | "always" | "off";

export interface RankerOptions {
  /** An ONNX model meeting the feedloop contract; the bundled default model when absent. */
  model?: ModelSource;
  /**
   * The wasm module, for setups that host the package's files themselves (a CDN; esbuild, which
   * copies no `new URL` assets): a URL, a Response, its bytes or a compiled WebAssembly.Module.
   * The package's own `feedloop_wasm_bg.wasm` when absent. One module serves the whole page: the
   * first create() that loads it decides, later ones share it.
   */
  wasm?: WasmSource;
  /** IndexedDB database for what the device learns ("feedloop" where IndexedDB exists); false: memory only. */
  storage?: string | false;
  /** How much each kind of feedback teaches, and the per-candidate cap. */
  weights?: FeedbackWeights;
  /** On-device SGD settings. */
  learning?: LearningConfig;
  /**
   * The device's privacy policy (ε = 8 at δ = 1e-6 per 30 days, ρ ≤ 0.5 per release by default);
   * `metricsShare` caps what metric reports may spend of it (default 1: the whole budget).
   */
  privacy?: PrivacyPolicyOptions;
  /**
   * The user's consent to contributing: `true` once they agreed (your consent banner or settings),
   * `false` when they declined or withdrew. Absent: what this device recorded before, and no
   * consent if it never was given. Without consent the device learns and personalizes, may
   * download newer global models, and sends nothing: no update, no metric report. Each change
   * is recorded in the privacy ledger. See `setConsent`.
   */
  consent?: boolean;
  /**
   * The user's segment, one of those the server declares with `feedloop serve --segment` (e.g.
   * their locale), so the dashboard can show the thumbs-up rate per segment and flag a
   * disparity. It never leaves the device as a label: once per model version the pair (segment,
   * thumbs verdict) is randomized together (k-ary randomized response, charged and in the
   * ledger). A segment the server does not declare is never reported.
   */
  segment?: string;
  /**
   * A feedloop server to sync with (needs `storage`): the device adopts newer global models and,
   * once the user consents (`consent`), contributes privatized updates to open rounds. Nothing
   * else leaves the device.
   */
  server?: ServerOptions;
  /** How often to sync automatically (default every 60 s, ±20 %); `intervalMs: 0`: only `sync()`. */
  sync?: { intervalMs?: number };
  /**
   * When `scoreCatalog` may use WebGPU: "auto" (default: a hardware adapter and at least 1024
   * entries; the adapter is requested at the first such catalog), "always" (any adapter, any batch;
   * requested at create) or "off"/false (CPU only).
   */
  gpu?: GpuMode | false;
}

/** Where the state is kept. */
export interface StorageStatus { name: string | null; persistent: boolean; lastError: Error | null }

/** An `error` event: a storage failure (the ranker keeps working in memory and retries), or a sync the
 *  server refused or the browser blocked (CORS: the server lacks `--cors-origin` for this origin). */
export interface RankerErrorEvent extends Event { error: Error }

export interface RankerEventMap {
  feedback: CustomEvent<FeedbackOutcome>;
  saved: CustomEvent<{ revision: number }>;
  sync: CustomEvent<SyncReport>;
  consent: CustomEvent<{ granted: boolean }>;
  error: RankerErrorEvent;
}

const DEFAULT_STORAGE = "feedloop";

/** Benchmark helpers (not needed by applications): exact discrete Gaussian draws; one privatization
 *  and one secure round's sealed report (each returns its size in bytes). */
export const diagnostics: {
  sampleDiscreteGaussian(sigma: number, count: number): Promise<Float64Array>;
  privatizeBenchmarkUpdate(dimension: number): Promise<number>;
  sealBenchmarkReport(dimension: number): Promise<number>;
} = {
  async sampleDiscreteGaussian(sigma, count) {
    await initialize();
    return sampleDiscreteGaussian(sigma, count);
  },
  async privatizeBenchmarkUpdate(dimension) {
    await initialize();
    return privatizeBenchmarkUpdate(dimension);
  },
  async sealBenchmarkReport(dimension) {
    await initialize();
    return sealBenchmarkReport(dimension);
  },
};

// Typed event listeners (declaration merging: no code, `EventTarget`'s own methods run).
export interface Ranker {
  addEventListener<K extends keyof RankerEventMap>(
    type: K, listener: (event: RankerEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

/**
 * Ranks candidates for a context with an on-device reward model and learns from the user's feedback.
 *
 * Events (it is an EventTarget):
 * - `feedback`: `event.detail` is the FeedbackOutcome of every recorded event (also implicit ones).
 * - `error`: `event.error` is an Error, e.g. a storage failure; the ranker keeps working in memory and
 *   retries on the next change, so nothing is dropped.
 * - `saved`: `event.detail.revision` after the state was durably written to IndexedDB.
 * - `sync`: `event.detail` is the SyncReport of every sync.
 * - `consent`: `event.detail.granted` after `setConsent` changed it.
 */
export class Ranker extends EventTarget {
  #inner: WasmRanker;
  #storage: string | null;
  #saving: Promise<void> | null = null;
  #dirty = false;
  #lastError: Error | null = null;
  #onHidden: (() => void) | null = null;
  #server: ServerOptions | null = null;
  #syncing: Promise<SyncReport> | null = null;
  #syncTimer: ReturnType<typeof setTimeout> | null = null;
  #syncEvery = 0;
  #onOnline: (() => void) | null = null;
  #freed = false;

  /** Use `await Ranker.create()`; the constructor is not public API. */
  private constructor(inner: WasmRanker, storage: string | null = null) {
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
   * default "feedloop"; `false` keeps everything in memory). Rejects with an `Error` naming what is
   * wrong.
   */
  static async create(options: RankerOptions = {}): Promise<Ranker> {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`feedloop: Ranker.create(options) takes an object, got ${describe(options)}`);
    }
    const known = ["model", "wasm", "storage", "weights", "learning", "privacy", "consent", "segment", "server", "sync", "gpu"];
    for (const key of Object.keys(options)) {
      if (!known.includes(key)) {
        throw new TypeError(`feedloop: unknown option \`${key}\`; expected one of ${known.join(", ")}`);
      }
    }
    const [bytes] = await Promise.all([modelBytes(options.model), initialize(options.wasm)]);
    const learning: LearningOptions = {};
    if (options.weights !== undefined) learning.weights = options.weights;
    if (options.learning !== undefined) learning.learning = options.learning;
    if (options.privacy !== undefined) learning.privacy = options.privacy;
    if (options.segment !== undefined) {
      if (typeof options.segment !== "string") {
        throw new TypeError(`feedloop: options.segment must be a string, got ${describe(options.segment)}`);
      }
      learning.segment = options.segment;
    }
    const inner = WasmRanker.withOptions(bytes, learning);
    const storage = storageName(options.storage);
    const sync = syncOptions(options.sync);
    if (options.server !== undefined && !storage) {
      throw new Error("feedloop: syncing with a server needs persistent storage (IndexedDB) for the privacy budget");
    }
    if (options.consent !== undefined && typeof options.consent !== "boolean") {
      throw new TypeError(`feedloop: options.consent must be true or false, got ${describe(options.consent)}`);
    }
    const gpu = options.gpu === undefined ? "auto" : options.gpu === false ? "off" : options.gpu;
    const ranker = new Ranker(inner, storage);
    // "always" requests a WebGPU adapter now, "auto" at the first catalog large enough to use one;
    // without one, the CPU path (never an error). The mode is checked in one place, the wasm layer.
    try {
      await inner.setGpu(gpu);
    } catch (error) {
      // What the wasm layer throws is always an Error; `unknown` only because catch says so.
      throw new TypeError((error as Error).message.replace("feedloop: gpu", "feedloop: options.gpu"));
    }
    if (storage) {
      try {
        await inner.restore(storage);
      } catch (error) {
        // Listeners are attached after create() resolves: report on the next task.
        setTimeout(() => ranker.#report(error), 0);
      }
    }
    // After the restore: a stored choice is replaced only by an explicit one.
    if (options.consent !== undefined) await inner.setConsent(storage ?? undefined, options.consent);
    if (options.server !== undefined) {
      inner.beacon(storage!, options.server); // validates the server options now (sends nothing yet)
      ranker.#server = options.server;
      if (sync.intervalMs > 0) ranker.#startSync(sync.intervalMs);
    }
    return ranker;
  }

  /**
   * Candidates best first: `[{ id, index, score }, ...]`. Candidates are strings (the id is the
   * text) or `{ id, text }` objects; feedback names them by id. Throws an `Error` for a non-string
   * context or malformed candidates.
   */
  rank(context: string, candidates: (string | CandidateInput)[]): RankedCandidate[] {
    const { ids, texts } = splitCandidates(candidates);
    // The core's order (best first, ties in input order) as [index, score, index, score, ...].
    const pairs = this.#inner.rankCandidates(context, ids.join(""), lengths(ids), texts.join(""), lengths(texts));
    const ranked: RankedCandidate[] = new Array(pairs.length / 2);
    for (let k = 0; k < ranked.length; k++) {
      const index = pairs[2 * k];
      ranked[k] = { id: ids[index], index, score: pairs[2 * k + 1] };
    }
    return ranked;
  }

  /** One personal score per candidate, in input order. */
  score(context: string, candidates: (string | CandidateInput)[]): Float32Array {
    const { ids, texts } = splitCandidates(candidates);
    return this.#score(context, ids, texts);
  }

  // Each list crosses into wasm as one joined string and the JS length of every piece.
  #score(context: string, ids: string[], texts: string[]): Float32Array {
    return this.#inner.scoreCandidates(context, ids.join(""), lengths(ids), texts.join(""), lengths(texts));
  }

  /**
   * Global-head scores straight from token ids (no tokenizer, no cache): the same work an ONNX
   * runtime does with this model, for like-for-like benchmarks.
   */
  scoreTokenIds(contextIds: Uint32Array, candidateIds: Uint32Array[]): Float32Array {
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
   * Embeds texts once into a flat catalog `{ dimensions, vectors, tokenCounts, tokenIds }` to score
   * many times with `scoreCatalog` (embedding is the expensive part; keep the catalog — the token ids
   * feed the default model's lexical term).
   */
  embedCatalog(texts: string[]): EmbeddedCatalog {
    return this.#inner.embedCatalog(texts);
  }

  /**
   * Personal scores of every catalog entry for `context`, in catalog order. Large catalogs run on
   * WebGPU where `options.gpu` allows it (a hardware adapter from 1024 entries with "auto"), the
   * CPU otherwise or if the GPU fails; the numbers agree to 1e-5 relative. `backend` says which ran.
   */
  async scoreCatalog(context: string, catalog: EmbeddedCatalog): Promise<Float32Array> {
    if (catalog === null || typeof catalog !== "object" || !(catalog.vectors instanceof Float32Array) ||
        !(catalog.tokenCounts instanceof Uint32Array) ||
        (catalog.tokenIds !== undefined && !(catalog.tokenIds instanceof Uint32Array))) {
      throw new TypeError(
        `feedloop: scoreCatalog needs a catalog from embedCatalog ({ vectors: Float32Array, tokenCounts: Uint32Array, tokenIds: Uint32Array }), got ${describe(catalog)}`,
      );
    }
    return this.#inner.scoreCatalog(context, catalog.vectors, catalog.tokenCounts, catalog.tokenIds);
  }

  /** The backend of the most recent `scoreCatalog`: "webgpu" or "cpu". */
  get backend(): "webgpu" | "cpu" {
    return this.#inner.backend as "webgpu" | "cpu";
  }

  /**
   * The WebGPU adapter catalog scoring may use (name, hardware or software), or null (none, or not
   * requested yet: "auto" requests one at the first catalog of 1024 entries or more).
   */
  get gpuAdapter(): string | null {
    return this.#inner.gpuAdapter ?? null;
  }

  /**
   * Changes when catalog scoring may use the GPU ("auto", "always", "off"); resolves to the
   * adapter's description or null.
   */
  async setGpu(mode: GpuMode | false): Promise<string | null> {
    return this.#inner.setGpu(mode === false ? "off" : mode);
  }

  /** One L2-normalized Float32Array of `info.dimensions` values per text. */
  embed(texts: string[]): Float32Array[] {
    return this.#inner.embed(texts);
  }

  /** Token ids the model sees for a text (truncated at `info.maxTokens`). */
  tokenize(text: string): Uint32Array {
    return this.#inner.tokenize(text);
  }

  /** Facts about the loaded model. */
  get info(): ModelInfo {
    return this.#inner.info;
  }

  /**
   * Records a feedback event and learns from it at once (rank again to see the change); saved in
   * the background. Throws an Error for a malformed event or a candidate that was never ranked.
   */
  recordFeedback(event: FeedbackEvent): FeedbackOutcome {
    const outcome = this.#inner.recordFeedback(event);
    this.#changed(outcome);
    return outcome;
  }

  /** Thumbs up (`up = true`) or down for a candidate. */
  thumbs(candidate: string, up: boolean): FeedbackOutcome {
    return this.recordFeedback({ kind: "thumbs", candidate, up });
  }

  /** The user prefers `winner` over `loser` ("A or B"). */
  choose(winner: string, loser: string): FeedbackOutcome {
    return this.recordFeedback({ kind: "pairwise", winner, loser });
  }

  /** The user rewrote a candidate: the new text is preferred over the original. */
  correct(candidate: string, text: string): FeedbackOutcome {
    return this.recordFeedback({ kind: "correction", candidate, text });
  }

  /**
   * A star rating, 1 to 5 (any other number throws an `Error`; a `number` from a form is accepted
   * by the types and checked at run time).
   */
  rate(candidate: string, stars: number): FeedbackOutcome {
    return this.recordFeedback({ kind: "stars", candidate, stars } as FeedbackEvent);
  }

  /** Flags a candidate: "wrong", "harmful" or "off-topic". */
  flag(candidate: string, category: FlagCategory): FeedbackOutcome {
    return this.recordFeedback({ kind: "flag", candidate, category });
  }

  /** Records clicks, copies and dwell on `element` as implicit feedback about `candidate`. */
  observe(element: Element, candidate: string): void {
    this.#inner.observe(element, candidate, (result: FeedbackOutcome | Error) => {
      if (result instanceof Error) this.#report(result);
      else this.#changed(result);
    });
  }

  /** Stops observing `element`; returns whether it was observed. */
  unobserve(element: Element): boolean {
    return this.#inner.unobserve(element);
  }

  /** The parts of a candidate's score and how sure the model is (how much feedback backs it). */
  explain(candidate: string): Explanation {
    return this.#inner.explain(candidate);
  }

  /** Recent feedback on this device, oldest first (local only, never uploaded). */
  activity(): Activity[] {
    return this.#inner.activity();
  }

  /** What this device learned: the delta from the global head and the example count. */
  learningState(): LearningState {
    return this.#inner.learningState();
  }

  /** The personal state's bytes, exactly as saved to IndexedDB. */
  stateBytes(): Uint8Array {
    return this.#inner.stateBytes();
  }

  /** Forgets what this device learned (and saves that). */
  resetLearning(): void {
    this.#inner.resetLearning();
    this.#scheduleSave();
  }

  /** The privacy policy, what has been spent and remains, and the ledger of every release (each also a dp-accounting DpEvent). */
  privacyReport(): PrivacyReport {
    return this.#inner.privacyReport();
  }

  /** Whether the user's consent to contributing stands (see `options.consent`). */
  get consent(): boolean {
    return this.#inner.consent;
  }

  /**
   * Records the user's consent to contributing (`true`: updates and metric reports may leave the
   * device, privatized and within the budget) or its withdrawal (`false`: nothing more is sent,
   * and uploads still queued are deleted; what was spent stays spent and recorded). Saved durably
   * and written to the privacy ledger; resolves to whether it changed.
   */
  async setConsent(granted: boolean): Promise<boolean> {
    if (typeof granted !== "boolean") {
      throw new TypeError(`feedloop: setConsent(granted) takes true or false, got ${describe(granted)}`);
    }
    const changed = await this.#inner.setConsent(this.#storage ?? undefined, granted);
    if (changed) this.dispatchEvent(new CustomEvent("consent", { detail: { granted } }));
    return changed;
  }

  /** The ledger as JSON (check it with `feedloop privacy verify-ledger`). */
  exportLedger(): string {
    return this.#inner.exportLedger();
  }

  /**
   * The next upload for a round, exactly as it would leave the device (bytes and decoded form),
   * before anything is sent. Throws if the round's noise is weaker than the policy allows, the
   * budget cannot pay for it, or it is for another model version.
   */
  inspectNextUpload(round: RoundConfig): InspectedUpload {
    return this.#inner.inspectNextUpload(round);
  }

  /**
   * Charges the budget for the inspected upload, records it in the ledger, saves both durably and
   * then resolves with the bytes to send. Needs IndexedDB: spending must survive a reload.
   */
  async releaseNextUpload(round: RoundConfig): Promise<Uint8Array> {
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
  async sync(): Promise<SyncReport> {
    if (!this.#server) throw new Error("feedloop: sync needs Ranker.create({ server: { url, deploymentKey } })");
    if (this.#syncing) return this.#syncing;
    this.#syncing = (async () => {
      try {
        await this.flush(); // what was learned is saved before it is contributed
        const report = await this.#inner.sync(this.#storage!, this.#server!);
        this.dispatchEvent(new CustomEvent("sync", { detail: report }));
        // Not offline, yet stopped: the server refused, or the browser blocked it (CORS). Something
        // for the developer to fix; queued uploads stay queued.
        if (report.error && !report.offline) this.#report(new Error(`feedloop: sync: ${report.error}`));
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
  pendingUploads(): PendingUpload[] {
    return this.#inner.pendingUploads();
  }

  /**
   * The payload inspector for metric reports: each released report waiting for delivery (its
   * exact JSON body and ledger entry), then each noted one (which fields will leave at the next
   * sync and how they are randomized; the user's verdict itself never leaves and is not shown).
   */
  pendingMetricReports(): MetricPreview[] {
    return this.#inner.pendingMetricReports();
  }

  /** The global model version the personal head builds on ("bundled" before the first sync). */
  get modelVersion(): string {
    return this.#inner.modelVersion;
  }

  /** Stops the automatic sync schedule (manual `sync()` still works). */
  stopSync(): void {
    clearTimeout(this.#syncTimer ?? undefined);
    this.#syncTimer = null;
    this.#syncEvery = 0;
    if (this.#onOnline && typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.#onOnline);
    }
    this.#onOnline = null;
  }

  #startSync(intervalMs: number): void {
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

  #beacon(): void {
    try {
      this.#inner.beacon(this.#storage!, this.#server!);
    } catch (error) {
      this.#report(error);
    }
  }

  /** Where the state is kept: `{ name, persistent, lastError }`. */
  get storage(): StorageStatus {
    return { name: this.#storage, persistent: Boolean(this.#storage), lastError: this.#lastError };
  }

  /** Resolves once everything recorded so far is saved (or the save failed and was reported). */
  async flush(): Promise<void> {
    this.#scheduleSave();
    while (this.#saving) await this.#saving;
  }

  #changed(outcome: FeedbackOutcome): void {
    this.dispatchEvent(new CustomEvent("feedback", { detail: outcome }));
    this.#scheduleSave();
  }

  #scheduleSave(): void {
    if (!this.#storage) return;
    this.#dirty = true;
    if (this.#saving) return;
    this.#saving = (async () => {
      await Promise.resolve(); // coalesce the events of one task into one write
      while (this.#dirty) {
        this.#dirty = false;
        try {
          const revision = await this.#inner.save(this.#storage!);
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

  // What the wasm layer throws is always an Error (JsError); `unknown` only because catch says so.
  #report(error: unknown): void {
    this.#lastError = error as Error;
    const event = new Event("error") as RankerErrorEvent;
    event.error = error as Error;
    this.dispatchEvent(event);
  }

  /** Frees the wasm memory held by this ranker; it cannot be used afterwards. Safe to call twice. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.stopSync();
    if (this.#onHidden) document.removeEventListener("visibilitychange", this.#onHidden);
    this.#inner.free();
  }

  [Symbol.dispose](): void {
    this.free();
  }
}

/** The JS length (UTF-16 code units) of every string: how the joined lists split in wasm. */
function lengths(list: string[]): Uint32Array {
  return Uint32Array.from(list, (s) => s.length);
}

/**
 * Parallel arrays of ids and texts. Strings are their own ids; a repeated string gets `text#2`,
 * `text#3`, ... (the rule of the core's `CandidateIds`, which the wasm layer's `rank` uses). The checks are for JavaScript callers,
 * whom the types do not bind.
 */
function splitCandidates(candidates: (string | CandidateInput)[]): { ids: string[]; texts: string[] } {
  if (!Array.isArray(candidates)) {
    throw new Error(`feedloop: candidates must be an array of strings or { id, text } objects, got ${typeName(candidates)}`);
  }
  const ids: string[] = new Array(candidates.length);
  const texts: string[] = new Array(candidates.length);
  const seen = new Map<string, number>();
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

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

function syncOptions(option: RankerOptions["sync"] | null): { intervalMs: number } {
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

function storageName(option: string | false | null | undefined): string | null {
  if (option === false || option === null) return null;
  if (option === undefined) return WasmRanker.storageAvailable() ? DEFAULT_STORAGE : null;
  if (typeof option === "string" && option.length > 0) return option;
  throw new TypeError(`feedloop: options.storage must be a database name or false, got ${describe(option)}`);
}
