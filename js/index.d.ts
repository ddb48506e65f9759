import type {
  RankedCandidate, CandidateInput, ModelInfo, FeedbackEvent, FeedbackKind, FeedbackOutcome,
  FlagCategory, Explanation, Activity, LearningState, FeedbackWeights, LearningConfig,
  PrivacyPolicyOptions, RoundConfig, InspectedUpload, PrivacyReport,
  ServerOptions, OpenRound, SettledUpload, SyncReport, PendingUpload, EmbeddedCatalog,
} from "./feedloop_wasm.js";
export type {
  RankedCandidate, CandidateInput, ModelInfo, FeedbackEvent, FeedbackKind, FeedbackOutcome,
  FlagCategory, Explanation, Activity, LearningState, FeedbackWeights, LearningConfig,
  PrivacyPolicyOptions, RoundConfig, InspectedUpload, PrivacyReport,
  ServerOptions, OpenRound, SettledUpload, SyncReport, PendingUpload, EmbeddedCatalog,
} from "./feedloop_wasm.js";

/** Where a model comes from: its bytes, or a URL to fetch it from. */
export type ModelSource = Uint8Array | ArrayBuffer | ArrayBufferView | URL | string;

export interface RankerOptions {
  /** An ONNX model meeting the feedloop contract; the bundled default model when absent. */
  model?: ModelSource;
  /** IndexedDB database for what the device learns ("feedloop" where IndexedDB exists); false: memory only. */
  storage?: string | false;
  /** How much each kind of feedback teaches, and the per-candidate cap. */
  weights?: FeedbackWeights;
  /** On-device SGD settings. */
  learning?: LearningConfig;
  /** The device's privacy policy (ε = 8 at δ = 1e-6 per 30 days, ρ ≤ 0.5 per release by default). */
  privacy?: PrivacyPolicyOptions;
  /**
   * A feedloop server to sync with (needs `storage`): the device adopts newer global models and
   * contributes privatized updates to open rounds. Nothing else leaves the device.
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

export type GpuMode = "auto" | "always" | "off";

/** Benchmark helpers: exact discrete Gaussian draws; one privatization (returns its size in bytes). */
export const diagnostics: {
  sampleDiscreteGaussian(sigma: number, count: number): Promise<Float64Array>;
  privatizeBenchmarkUpdate(dimension: number): Promise<number>;
};

export interface StorageStatus { name: string | null; persistent: boolean; lastError: Error | null }

/** An `error` event: a storage failure (the ranker keeps working in memory and retries). */
export interface RankerErrorEvent extends Event { error: Error }

export interface RankerEventMap {
  feedback: CustomEvent<FeedbackOutcome>;
  saved: CustomEvent<{ revision: number }>;
  sync: CustomEvent<SyncReport>;
  error: RankerErrorEvent;
}

/** Ranks candidates for a context with an on-device reward model and learns from feedback. */
export class Ranker extends EventTarget {
  private constructor();
  /** Loads the wasm module (once), a model and the saved state. Rejects with an `Error` naming what is wrong. */
  static create(options?: RankerOptions): Promise<Ranker>;
  /** Candidates best first. Throws an `Error` for a non-string context or malformed candidates. */
  rank(context: string, candidates: (string | CandidateInput)[]): RankedCandidate[];
  /** One personal score per candidate, in input order. */
  score(context: string, candidates: (string | CandidateInput)[]): Float32Array;
  /** Global-head scores straight from token ids (no tokenizer, no cache), for benchmarks. */
  scoreTokenIds(contextIds: Uint32Array, candidateIds: Uint32Array[]): Float32Array;
  /** Embeds texts once into a flat catalog to score many times with `scoreCatalog`. */
  embedCatalog(texts: string[]): EmbeddedCatalog;
  /** Personal scores of every catalog entry, on WebGPU when allowed and worth it, else the CPU. */
  scoreCatalog(context: string, catalog: EmbeddedCatalog): Promise<Float32Array>;
  /** The backend of the most recent `scoreCatalog`. */
  readonly backend: "webgpu" | "cpu";
  /** The WebGPU adapter in use, or null (none, or not requested yet). */
  readonly gpuAdapter: string | null;
  /** Changes the GPU mode; resolves to the adapter's description or null. */
  setGpu(mode: GpuMode | false): Promise<string | null>;
  /** One L2-normalized Float32Array of `info.dimensions` values per text. */
  embed(texts: string[]): Float32Array[];
  /** Token ids the model sees for a text (truncated at `info.maxTokens`). */
  tokenize(text: string): Uint32Array;
  /** Facts about the loaded model. */
  readonly info: ModelInfo;
  /** Records an event and learns from it at once. Throws an `Error` for a malformed event or unknown candidate. */
  recordFeedback(event: FeedbackEvent): FeedbackOutcome;
  thumbs(candidate: string, up: boolean): FeedbackOutcome;
  choose(winner: string, loser: string): FeedbackOutcome;
  correct(candidate: string, text: string): FeedbackOutcome;
  rate(candidate: string, stars: 1 | 2 | 3 | 4 | 5): FeedbackOutcome;
  flag(candidate: string, category: FlagCategory): FeedbackOutcome;
  /** Records click, copy and dwell on `element` as implicit feedback about `candidate`. */
  observe(element: Element, candidate: string): void;
  unobserve(element: Element): boolean;
  /** Why a candidate scores what it does, and how much feedback backs it. */
  explain(candidate: string): Explanation;
  /** Recent feedback on this device, oldest first (never uploaded). */
  activity(): Activity[];
  learningState(): LearningState;
  resetLearning(): void;
  /** The personal state's bytes, exactly as saved to IndexedDB. */
  stateBytes(): Uint8Array;
  /** Policy, spending and the ledger (each release also a dp-accounting DpEvent). */
  privacyReport(): PrivacyReport;
  /** The ledger as JSON (`feedloop privacy verify-ledger` checks it). */
  exportLedger(): string;
  /** The next upload for a round, exactly as it would leave the device. Throws if the policy or budget refuse it. */
  inspectNextUpload(round: RoundConfig): InspectedUpload;
  /** Charges, ledgers and durably saves, then resolves with the bytes to send (needs IndexedDB). */
  releaseNextUpload(round: RoundConfig): Promise<Uint8Array>;
  readonly storage: StorageStatus;
  /** One sync now (the automatic schedule calls this too); resolves with what it did. */
  sync(): Promise<SyncReport>;
  /** Uploads waiting to be delivered. */
  pendingUploads(): PendingUpload[];
  /** The global model version the personal head builds on ("bundled" before the first sync). */
  readonly modelVersion: string;
  /** Stops the automatic sync schedule. */
  stopSync(): void;
  /** Resolves once everything recorded so far is saved (or the failure was reported). */
  flush(): Promise<void>;
  addEventListener<K extends keyof RankerEventMap>(
    type: K, listener: (event: RankerEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  /** Frees the wasm memory held by this ranker. */
  free(): void;
  [Symbol.dispose](): void;
}
