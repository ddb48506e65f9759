//! The TypeScript types of what crosses the boundary as plain objects, for the generated
//! `feedloop_wasm.d.ts` (wasm-bindgen types the functions; these name the shapes it cannot infer).
//! The package's own types are in js/index.ts.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** One candidate in a ranking: the id (yours, or the text for plain strings), its position in the
 *  input array and its personal score. */
export interface RankedCandidate { id: string; index: number; score: number }

/**
 * Texts embedded once (`embedCatalog`), row-major, to score many times with `scoreCatalog`.
 * `tokenIds` (every entry's ids in turn) feeds the lexical term of a contract 2 model; a catalog
 * without them is refused by such a model (embed it again).
 */
export interface EmbeddedCatalog { dimensions: number; vectors: Float32Array; tokenCounts: Uint32Array; tokenIds?: Uint32Array }

/** A candidate with an id of yours, so feedback can name it. */
export interface CandidateInput { id: string; text: string }

/** Facts about the loaded model. */
export interface ModelInfo {
  contractVersion: string;
  dimensions: number;
  maxTokens: number;
  vocabSize: number;
  headParameters: number;
  metadata: [string, string][];
}

export type FlagCategory = "wrong" | "harmful" | "off-topic";

/** Common to every event: the context it was judged in (default: where the candidate was last
 *  ranked) and when (ms since 1970, default now; more than 5 minutes ahead is an error). */
interface EventBase { context?: string; timestamp?: number }

/** Every feedback event, by kind. */
export type FeedbackEvent = EventBase & (
  | { kind: "thumbs"; candidate: string; up: boolean }
  | { kind: "stars"; candidate: string; stars: 1 | 2 | 3 | 4 | 5 }
  | { kind: "pairwise"; winner: string; loser: string }
  | { kind: "correction"; candidate: string; text: string }
  | { kind: "flag"; candidate: string; category: FlagCategory }
  | { kind: "click"; candidate: string }
  | { kind: "dwell"; candidate: string; ms: number }
  | { kind: "copy"; candidate: string }
  | { kind: "regenerate"; candidate: string }
  | { kind: "skip"; candidate: string }
);

export type FeedbackKind = FeedbackEvent["kind"];

/** What recording an event did. */
export interface FeedbackOutcome {
  kind: FeedbackKind;
  /** Whether the personal head learned from it (capped or too-short events are only logged). */
  learned: boolean;
  reason?: string;
  /** The (first named) candidate's personal score before and after. */
  scoreBefore: number;
  scoreAfter: number;
}

/** The parts of a candidate's score: score = relevance + globalPreference + personalAdjustment. */
export interface Explanation {
  candidate: string;
  context: string;
  score: number;
  /** The global head's meaning (cosine) and shared-word (lexical) terms. */
  relevance: number;
  globalPreference: number;
  personalAdjustment: number;
  /** 0 (no feedback behind it) to 1. */
  confidence: number;
  directFeedback: number;
  learnedExamples: number;
}

/** One entry of the local activity log (never uploaded). */
export interface Activity {
  id: number;
  timestamp: number;
  kind: FeedbackKind;
  candidates: string[];
  weight: number;
  learned: boolean;
  scoreBefore: number;
  scoreAfter: number;
}

/** What the device learned: the personal head's offset from the global head. */
export interface LearningState { baseVersion: string; delta: number[]; exampleCount: number }

export interface FeedbackWeights {
  thumbs?: number; stars?: number; pairwise?: number; correction?: number; flag?: number;
  click?: number; dwell?: number; copy?: number; regenerate?: number; skip?: number;
  /** Dwell shorter than this teaches nothing (default 4000). */
  minDwellMs?: number;
  /** Events about one candidate that still teach (default 5). */
  maxEventsPerCandidate?: number;
}

export interface LearningConfig {
  learningRate?: number; clipNorm?: number; l2?: number;
  replaySteps?: number; replayCapacity?: number; seed?: number;
}

/** The device's privacy policy: at most `epsilon` at `delta` over any `windowDays`, and at most
 *  `maxRhoPerRelease` (zCDP) per release. Defaults: ε = 8, δ = 1e-6, 30 days, ρ ≤ 0.5. */
export interface PrivacyPolicyOptions {
  epsilon?: number; delta?: number; windowDays?: number; maxRhoPerRelease?: number;
  /** The share of the window's budget metric reports (thumbs, ratings) may use, 0 < share ≤ 1
   *  (default 1: the whole budget); the rest stays for model updates. */
  metricsShare?: number;
  /** Fingerprints ("sha256:…", from the helper's GET /v1/helper) of the helper aggregators whose
   *  secure rounds this device joins, and to which it seals its thumbs, star and agreement
   *  reports where the server aggregates metrics securely (`--secure-metrics`); none (the
   *  default): it joins no secure round and randomizes every metric report. */
  helpers?: string[];
  /** The least batch a secure round's (or secure metric's) helper may release (default 10). */
  minSecureReports?: number;
}

export interface LearningOptions {
  weights?: FeedbackWeights; learning?: LearningConfig; privacy?: PrivacyPolicyOptions;
  /** The user's segment among those the server declares (e.g. a locale): only ever sent
   *  randomized together with a thumbs verdict. */
  segment?: string;
}

/** A federated round as a server announces it. */
export interface RoundConfig {
  roundId: string; modelVersion: string; clipNorm: number; granularity: number;
  /** σ: what the device adds (local rounds), or what the helper adds to the sum (secure rounds). */
  noiseStddev: number;
  /** A secure round's two aggregators; absent for a local-DP round. */
  secure?: SecureAggregators;
}

/** A secure round's aggregators: the device seals one share to each key, if its policy pins the
 *  helper's fingerprint and accepts the minimum batch. */
export interface SecureAggregators {
  leaderKey: string; helperKey: string; helperFingerprint: string; minReports: number; valueRadius: number;
}

/** The feedloop server to sync with. */
export interface ServerOptions {
  /** Base URL, e.g. "https://feedback.example.com"; "" for this page's origin. */
  url: string;
  /** The site's deployment key (`feedloop serve --deployment-key site=KEY`). */
  deploymentKey: string;
}

/** The open round as the server announces it. */
export interface OpenRound extends RoundConfig {
  dimension: number; minCohort: number; targetCount: number | null; received: number; deadline: number | null;
}

/** An upload that left the queue: stored by the server, or refused for good / expired. */
export interface SettledUpload { roundId: string; sha256: string; delivered: boolean; reason: string | null }

/** What one `sync()` did. */
export interface SyncReport {
  /** The server was unreachable (or failing): queued uploads wait, with backoff. */
  offline: boolean;
  /** Why the sync stopped early. Not offline with an error: the server refused, or the browser
   *  blocked its answers (CORS), which is also an `error` event; queued uploads stay queued. */
  error: string | null;
  clientId: string | null;
  /** The global model in use after this sync, and whether this sync adopted it. */
  modelVersion: string;
  modelUpdated: boolean;
  round: OpenRound | null;
  /** This sync's contribution: round, payload hash (as in the ledger) and its ε. */
  contribution: { roundId: string; sha256: string; epsilon: number } | null;
  /** Why nothing was contributed (nothing new learned, policy, budget, already contributed, no round). */
  skipped: string | null;
  settled: SettledUpload[];
  /** Uploads still waiting. */
  queued: number;
  /** Metric reports this sync released and sent, each charged and in the ledger first: per model
   *  version one randomized-response bit ("did the answer it ranked first get a thumbs up") and
   *  one randomized star rating. */
  metrics: MetricReport[];
}

/** One metric report of a sync. */
export interface MetricReport {
  /** "thumbs": did the answer this version ranked first get a thumbs up (a randomized bit);
   *  "stars": the last star rating given under it (5-ary randomized response);
   *  "agreement": did this version's global model already prefer the user's last "A or B"
   *  choice (federated evaluation; a randomized bit);
   *  "kinds": feedback volume — whether the user gave one kind of feedback, drawn at random,
   *  under it (a randomized bit). */
  kind: "thumbs" | "stars" | "agreement" | "kinds"; modelVersion: string; sha256: string; epsilon: number; delivered: boolean;
  error: string | null;
}

/** An upload waiting to be delivered (privatized and in the ledger already). */
export interface PendingUpload {
  roundId: string; modelVersion: string; sha256: string; bytes: number; attempts: number;
  nextAttemptAt: number; beaconed: boolean;
}

/** A metric report in the payload inspector: `noted` (randomized only when released, at the next
 *  sync; the verdict is not shown, it never leaves) or `released` (randomized, charged, in the
 *  ledger, waiting for delivery: `body` is exactly what is sent). */
export interface MetricPreview {
  kind: "thumbs" | "stars" | "agreement" | "kinds" | "segments"; modelVersion: string;
  state: "noted" | "released"; path: string; fields: string[]; mechanism: string;
  body?: string; ledgerIndex?: number; payloadSha256?: string;
}

/** The next upload, exactly as it would leave the device, before anything is sent. */
export interface InspectedUpload {
  round: RoundConfig;
  /** The exact bytes (docs/PRIVACY.md, wire format). */
  bytes: Uint8Array;
  sha256: string;
  /** "local": the bytes are these values with the device's noise. "secure": the bytes are a sealed
   *  report (two HPKE ciphertexts of Prio3 shares of these clipped, rounded values, no noise: the
   *  helper adds σ to the sum). */
  decoded: { aggregation: "local" | "secure"; dimension: number; values: number[]; clipNorm: number; granularity: number; noiseStddev: number };
  /** zCDP cost of this release, and its ε alone at the policy's δ. */
  rho: number;
  epsilon: number;
  /** ε spent in the current window if it is released. */
  windowEpsilonAfter: number;
}

/** Policy, spending and the ledger (each entry also a dp-accounting DpEvent). */
export interface PrivacyReport {
  /** The user's consent to contributing, from the ledger: none until the page grants it (setConsent). */
  consent: { granted: boolean; changedAtMs: number | null };
  policy: { epsilon: number; delta: number; windowDays: number; maxRhoPerRelease: number; totalRho: number; minNoiseMultiplier: number; metricsShare: number; helpers: string[]; minSecureReports: number };
  spent: { windowRho: number; windowEpsilon: number; lifetimeRho: number; releases: number };
  remaining: { rho: number };
  ledger: any;
}
"#;
