// Type test of the built package's generated declarations (pkg/index.d.ts, pkg/widget.d.ts): the
// public option, event and report types, every example in the README, and misuse the types must
// refuse (`@ts-expect-error` fails the check if the line compiles). Only type-checked
// (`make test-types`: tsc --noEmit -p tests/types), never run.
import { expectTypeOf } from "expect-type";

import { Ranker, diagnostics } from "feedloop";
import type {
  RankerOptions, FeedbackEvent, FeedbackKind, FeedbackOutcome, SyncReport, MetricReport, OpenRound, SettledUpload,
  RankedCandidate, CandidateInput, ModelSource, WasmSource, GpuMode, ServerOptions, FeedbackWeights, LearningConfig,
  PrivacyPolicyOptions, Explanation, Activity, LearningState, ModelInfo, PrivacyReport, InspectedUpload,
  RoundConfig, PendingUpload, MetricPreview, EmbeddedCatalog, StorageStatus, RankerErrorEvent, FlagCategory,
} from "feedloop";
import { mountFeedback, mountComparison, mountPrivacyPanel, WIDGET_CSS } from "feedloop/widget";
import type { FeedbackWidgetOptions, ComparisonOptions, MountedWidget, FeedbackControl, PrivacyPanelOptions } from "feedloop/widget";
// The same module by its path in pkg/, as a relative import sees it.
import { Ranker as RankerByPath } from "../../pkg/index.js";

// What the README's snippets take for granted.
declare const element: HTMLElement;
declare const container: HTMLElement;
declare const question: string;

expectTypeOf(RankerByPath).toEqualTypeOf(Ranker);

// ---- RankerOptions ----------------------------------------------------------------------------

// The same keys as the run-time check in Ranker.create.
expectTypeOf<keyof RankerOptions>().toEqualTypeOf<
  "model" | "wasm" | "storage" | "weights" | "learning" | "privacy" | "consent" | "segment" | "server" | "sync" | "gpu"
>();
expectTypeOf<RankerOptions["consent"]>().toEqualTypeOf<boolean | undefined>();
expectTypeOf<RankerOptions["segment"]>().toEqualTypeOf<string | undefined>();
expectTypeOf<RankerOptions["wasm"]>().toEqualTypeOf<WasmSource | undefined>();
expectTypeOf<WasmSource>().toEqualTypeOf<URL | string | Response | ArrayBuffer | ArrayBufferView | WebAssembly.Module>();
expectTypeOf<RankerOptions["model"]>().toEqualTypeOf<ModelSource | undefined>();
expectTypeOf<ModelSource>().toEqualTypeOf<Uint8Array | ArrayBuffer | ArrayBufferView | URL | string>();
expectTypeOf<RankerOptions["storage"]>().toEqualTypeOf<string | false | undefined>();
expectTypeOf<RankerOptions["weights"]>().toEqualTypeOf<FeedbackWeights | undefined>();
expectTypeOf<RankerOptions["learning"]>().toEqualTypeOf<LearningConfig | undefined>();
expectTypeOf<RankerOptions["privacy"]>().toEqualTypeOf<PrivacyPolicyOptions | undefined>();
expectTypeOf<RankerOptions["server"]>().toEqualTypeOf<ServerOptions | undefined>();
expectTypeOf<RankerOptions["sync"]>().toEqualTypeOf<{ intervalMs?: number } | undefined>();
expectTypeOf<RankerOptions["gpu"]>().toEqualTypeOf<GpuMode | false | undefined>();
expectTypeOf<GpuMode>().toEqualTypeOf<"auto" | "always" | "off">();
expectTypeOf<ServerOptions>().toEqualTypeOf<{ url: string; deploymentKey: string }>();
expectTypeOf<FeedbackWeights>().toHaveProperty("click").toEqualTypeOf<number | undefined>();
expectTypeOf<FeedbackWeights>().toHaveProperty("maxEventsPerCandidate").toEqualTypeOf<number | undefined>();
expectTypeOf<LearningConfig>().toHaveProperty("learningRate").toEqualTypeOf<number | undefined>();
expectTypeOf<PrivacyPolicyOptions>().toEqualTypeOf<{
  epsilon?: number; delta?: number; windowDays?: number; maxRhoPerRelease?: number; metricsShare?: number;
  helpers?: string[]; minSecureReports?: number;
}>();
expectTypeOf(Ranker.create).parameter(0).toEqualTypeOf<RankerOptions | undefined>();
expectTypeOf(Ranker.create).returns.resolves.toEqualTypeOf<Ranker>();

// Every option together, as the package tests pass them.
const everything: RankerOptions = {
  model: new Uint8Array(0),
  storage: "feedloop",
  weights: { click: 0, minDwellMs: 4000 },
  learning: { learningRate: 0.5, seed: 1 },
  privacy: { epsilon: 4, delta: 1e-6, windowDays: 7, maxRhoPerRelease: 0.25, helpers: ["sha256:00"], minSecureReports: 100 },
  server: { url: "", deploymentKey: "KEY" },
  sync: { intervalMs: 0 },
  gpu: false,
};
void everything;

// @ts-expect-error an unknown option (misspelled)
void Ranker.create({ storgae: "x" });
// @ts-expect-error gpu takes "auto" | "always" | "off" | false
void Ranker.create({ gpu: "yes" });
// @ts-expect-error storage is a database name or false, not true
void Ranker.create({ storage: true });
// @ts-expect-error a model is bytes or a URL
void Ranker.create({ model: 12 });
// @ts-expect-error an unknown sync option
void Ranker.create({ sync: { every: 5 } });
// @ts-expect-error a server needs its deployment key
void Ranker.create({ server: { url: "https://feedback.example.com" } });
// @ts-expect-error an unknown weight
void Ranker.create({ weights: { clicks: 1 } });
// @ts-expect-error the constructor is not public: `await Ranker.create()`
new Ranker();

// ---- Quick start (README) ---------------------------------------------------------------------

const ranker = await Ranker.create();              // the bundled default model
const mine = await Ranker.create({ model: "/models/mine.onnx" });  // or bytes: Uint8Array / ArrayBuffer
await Ranker.create({ model: new URL("https://example.com/m.onnx") });
await Ranker.create({ model: new ArrayBuffer(8) });
await Ranker.create({ model: new Uint8Array(8) });
expectTypeOf(mine).toEqualTypeOf<Ranker>();

const ranking = ranker.rank("how do I reset my password?", [
  "Our office is closed on Sundays.",
  "Click 'Forgot password' on the sign-in page and follow the link we email you.",
]);
expectTypeOf(ranking).toEqualTypeOf<RankedCandidate[]>();
expectTypeOf(ranking[0]).toEqualTypeOf<{ id: string; index: number; score: number }>();
expectTypeOf(ranker.score("q", ["a"])).toEqualTypeOf<Float32Array>();
// @ts-expect-error candidates are strings or { id, text }
ranker.rank("q", [42]);
// @ts-expect-error the context is a string
ranker.rank(undefined, ["a"]);

// ---- Feedback helpers (README) ----------------------------------------------------------------

const answers = [{ id: "a1", text: "Click 'Forgot password'…" }, { id: "a2", text: "We are closed on Sundays." }];
ranker.rank(question, answers);
ranker.thumbs("a1", false);            // learns at once; rank again to see it move
ranker.rate("a2", 4);                  // 1–5 stars
ranker.choose("a2", "a1");             // "A is better than B"
ranker.correct("a1", "Use 'Forgot password' on the sign-in page."); // the edit is preferred
ranker.flag("a1", "off-topic");        // "wrong" | "harmful" | "off-topic"
ranker.observe(element, "a1");         // click, copy, dwell → implicit events (weighted less)
ranker.explain("a1");                  // { relevance, globalPreference, personalAdjustment, score, confidence, … }
ranker.addEventListener("error", (e) => console.warn(e.error)); // storage failures; learning goes on in memory

expectTypeOf(answers).toExtend<CandidateInput[]>();
expectTypeOf(ranker.thumbs("a1", true)).toEqualTypeOf<FeedbackOutcome>();
expectTypeOf(ranker.explain("a1")).toEqualTypeOf<Explanation>();
expectTypeOf<Explanation>().toExtend<{
  relevance: number; globalPreference: number; personalAdjustment: number; score: number; confidence: number;
}>();
expectTypeOf<FeedbackOutcome>().toExtend<{
  kind: FeedbackKind; learned: boolean; reason?: string; scoreBefore: number; scoreAfter: number;
}>();
expectTypeOf(ranker.unobserve(element)).toEqualTypeOf<boolean>();

// A rating from a form is a number: accepted, and checked at run time (1 to 5).
declare const starsFromForm: number;
ranker.rate("a2", starsFromForm);
// @ts-expect-error stars are a number
ranker.rate("a2", "4");
// @ts-expect-error an unknown flag category
ranker.flag("a1", "boring");
// @ts-expect-error thumbs take a boolean
ranker.thumbs("a1", "up");

// ---- FeedbackEvent ----------------------------------------------------------------------------

expectTypeOf<FeedbackEvent["kind"]>().toEqualTypeOf<
  "thumbs" | "stars" | "pairwise" | "correction" | "flag" | "click" | "dwell" | "copy" | "regenerate" | "skip"
>();
expectTypeOf<FeedbackKind>().toEqualTypeOf<FeedbackEvent["kind"]>();
expectTypeOf<Extract<FeedbackEvent, { kind: "stars" }>["stars"]>().toEqualTypeOf<1 | 2 | 3 | 4 | 5>();
expectTypeOf<Extract<FeedbackEvent, { kind: "thumbs" }>["up"]>().toEqualTypeOf<boolean>();
expectTypeOf<Extract<FeedbackEvent, { kind: "pairwise" }>>().toExtend<{ winner: string; loser: string }>();
expectTypeOf<Extract<FeedbackEvent, { kind: "flag" }>["category"]>().toEqualTypeOf<FlagCategory>();
expectTypeOf<FlagCategory>().toEqualTypeOf<"wrong" | "harmful" | "off-topic">();
expectTypeOf<Extract<FeedbackEvent, { kind: "dwell" }>["ms"]>().toEqualTypeOf<number>();
// Every event may say where and when it was judged.
expectTypeOf<FeedbackEvent["context"]>().toEqualTypeOf<string | undefined>();
expectTypeOf<FeedbackEvent["timestamp"]>().toEqualTypeOf<number | undefined>();
expectTypeOf(ranker.recordFeedback).parameter(0).toEqualTypeOf<FeedbackEvent>();
expectTypeOf(ranker.recordFeedback).returns.toEqualTypeOf<FeedbackOutcome>();

ranker.recordFeedback({ kind: "thumbs", candidate: "a1", up: true });
ranker.recordFeedback({ kind: "stars", candidate: "a1", stars: 5, context: question });
ranker.recordFeedback({ kind: "pairwise", winner: "a2", loser: "a1", timestamp: Date.now() });
ranker.recordFeedback({ kind: "correction", candidate: "a1", text: "better" });
ranker.recordFeedback({ kind: "flag", candidate: "a1", category: "wrong" });
ranker.recordFeedback({ kind: "dwell", candidate: "a1", ms: 5000 });
for (const kind of ["click", "copy", "regenerate", "skip"] as const) ranker.recordFeedback({ kind, candidate: "a1" });

// @ts-expect-error an unknown feedback kind
ranker.recordFeedback({ kind: "love", candidate: "a1" });
// @ts-expect-error stars are 1 to 5 in an event literal
ranker.recordFeedback({ kind: "stars", candidate: "a1", stars: 0 });
// @ts-expect-error a thumbs event needs `up`
ranker.recordFeedback({ kind: "thumbs", candidate: "a1" });
// @ts-expect-error a pairwise event names a winner and a loser, not a candidate
ranker.recordFeedback({ kind: "pairwise", candidate: "a1" });
// @ts-expect-error a misspelled field
ranker.recordFeedback({ kind: "copy", candidate: "a1", timestmap: 1 });

// ---- Widget (README) --------------------------------------------------------------------------

const widget = mountFeedback(container, ranker, "a1", { text: answers[0].text }); // thumbs, stars, flag, edit-in-place
expectTypeOf(widget).toEqualTypeOf<MountedWidget>();
expectTypeOf(widget.element).toEqualTypeOf<HTMLElement>();
widget.destroy();
mountFeedback(container, ranker, "a2", {
  label: "this answer",
  controls: ["thumbs", "stars"],
  onFeedback: (outcome) => expectTypeOf(outcome).toEqualTypeOf<FeedbackOutcome>(),
  onError: (error) => expectTypeOf(error).toEqualTypeOf<Error>(),
});
const comparison = mountComparison(container, ranker, ["a1", "a2"], { question: "Which is clearer?", texts: ["First", "Second"] });
expectTypeOf(comparison).toEqualTypeOf<MountedWidget>();
expectTypeOf<FeedbackControl>().toEqualTypeOf<"thumbs" | "stars" | "flag" | "edit">();
expectTypeOf<FeedbackWidgetOptions>().toHaveProperty("controls").toEqualTypeOf<FeedbackControl[] | undefined>();
expectTypeOf<ComparisonOptions>().toHaveProperty("texts").toEqualTypeOf<[string, string] | undefined>();
// Pages with a Content Security Policy: the style carries the page's nonce, or is not injected at all.
mountFeedback(container, ranker, "a1", { styleNonce: "r4nd0m" });
mountComparison(container, ranker, ["a1", "a2"], { injectStyle: false });
expectTypeOf(WIDGET_CSS).toEqualTypeOf<string>();

// @ts-expect-error an unknown control
mountFeedback(container, ranker, "a1", { controls: ["emoji"] });
// @ts-expect-error a comparison is of exactly two candidates
mountComparison(container, ranker, ["a1", "a2", "a3"]);

// ---- Sync with a server (README) --------------------------------------------------------------

{
  const ranker = await Ranker.create({ server: { url: "https://feedback.example.com", deploymentKey: "KEY" } });
  ranker.addEventListener("sync", (e) => console.log(e.detail)); // { modelVersion, contribution, skipped, queued, … }
  ranker.addEventListener("sync", (e) => expectTypeOf(e.detail).toEqualTypeOf<SyncReport>());
  expectTypeOf(ranker.sync()).resolves.toEqualTypeOf<SyncReport>();
}
await Ranker.create({ server: { url: "", deploymentKey: "KEY" }, sync: { intervalMs: 0 } });

// ---- SyncReport -------------------------------------------------------------------------------

expectTypeOf<SyncReport>().toHaveProperty("offline").toEqualTypeOf<boolean>();
expectTypeOf<SyncReport>().toHaveProperty("error").toEqualTypeOf<string | null>();
expectTypeOf<SyncReport>().toHaveProperty("clientId").toEqualTypeOf<string | null>();
expectTypeOf<SyncReport>().toHaveProperty("modelVersion").toEqualTypeOf<string>();
expectTypeOf<SyncReport>().toHaveProperty("modelUpdated").toEqualTypeOf<boolean>();
expectTypeOf<SyncReport>().toHaveProperty("round").toEqualTypeOf<OpenRound | null>();
expectTypeOf<SyncReport>().toHaveProperty("contribution").toEqualTypeOf<
  { roundId: string; sha256: string; epsilon: number } | null
>();
expectTypeOf<SyncReport>().toHaveProperty("skipped").toEqualTypeOf<string | null>();
expectTypeOf<SyncReport>().toHaveProperty("settled").toEqualTypeOf<SettledUpload[]>();
expectTypeOf<SyncReport>().toHaveProperty("queued").toEqualTypeOf<number>();
expectTypeOf<SyncReport>().toHaveProperty("metrics").toEqualTypeOf<MetricReport[]>();
expectTypeOf<MetricReport>().toEqualTypeOf<{
  kind: "thumbs" | "stars" | "agreement" | "kinds"; modelVersion: string; sha256: string; epsilon: number; delivered: boolean; error: string | null;
}>();
expectTypeOf<keyof SyncReport>().toEqualTypeOf<
  "offline" | "error" | "clientId" | "modelVersion" | "modelUpdated" | "round" | "contribution" | "skipped" | "settled"
  | "queued" | "metrics"
>();
expectTypeOf<OpenRound>().toExtend<RoundConfig>();
expectTypeOf<OpenRound>().toExtend<{ minCohort: number; targetCount: number | null; deadline: number | null }>();
expectTypeOf<SettledUpload>().toEqualTypeOf<{ roundId: string; sha256: string; delivered: boolean; reason: string | null }>();
expectTypeOf(ranker.pendingUploads()).toEqualTypeOf<PendingUpload[]>();
expectTypeOf(ranker.pendingMetricReports()).toEqualTypeOf<MetricPreview[]>();
expectTypeOf<MetricPreview["state"]>().toEqualTypeOf<"noted" | "released">();
expectTypeOf(ranker.modelVersion).toEqualTypeOf<string>();
expectTypeOf(ranker.stopSync()).toEqualTypeOf<void>();

// ---- The rest of the API table ----------------------------------------------------------------

ranker.addEventListener("feedback", (e) => expectTypeOf(e.detail).toEqualTypeOf<FeedbackOutcome>());
ranker.addEventListener("saved", (e) => expectTypeOf(e.detail.revision).toEqualTypeOf<number>());
ranker.addEventListener("error", (e) => expectTypeOf(e).toEqualTypeOf<RankerErrorEvent>());
ranker.addEventListener("visibilitychange", (e) => expectTypeOf(e).toEqualTypeOf<Event>()); // any other name: a plain Event
expectTypeOf(ranker).toExtend<EventTarget>();

expectTypeOf(ranker.activity()).toEqualTypeOf<Activity[]>();
expectTypeOf(ranker.learningState()).toEqualTypeOf<LearningState>();
expectTypeOf(ranker.resetLearning()).toEqualTypeOf<void>();
expectTypeOf(ranker.stateBytes()).toEqualTypeOf<Uint8Array>();
expectTypeOf(ranker.flush()).resolves.toEqualTypeOf<void>();
expectTypeOf(ranker.storage).toEqualTypeOf<StorageStatus>();
expectTypeOf<StorageStatus>().toEqualTypeOf<{ name: string | null; persistent: boolean; lastError: Error | null }>();

const round: RoundConfig = { roundId: "r1", modelVersion: "bundled", clipNorm: 1, granularity: 0.01, noiseStddev: 4 };
expectTypeOf(ranker.privacyReport()).toEqualTypeOf<PrivacyReport>();
expectTypeOf<PrivacyReport["consent"]>().toEqualTypeOf<{ granted: boolean; changedAtMs: number | null }>();
// Consent: nothing is contributed until the page records the user's yes.
expectTypeOf(ranker.consent).toEqualTypeOf<boolean>();
expectTypeOf(ranker.setConsent(true)).resolves.toEqualTypeOf<boolean>();
ranker.addEventListener("consent", (e) => expectTypeOf(e.detail.granted).toEqualTypeOf<boolean>());
// @ts-expect-error consent is a boolean
ranker.setConsent("yes");
const panel = mountPrivacyPanel(container, ranker, { title: "Privacy", onConsentChange: (granted) => expectTypeOf(granted).toEqualTypeOf<boolean>() });
expectTypeOf(panel).toEqualTypeOf<MountedWidget>();
expectTypeOf<PrivacyPanelOptions>().toHaveProperty("styleNonce").toEqualTypeOf<string | undefined>();
expectTypeOf<PrivacyReport>().toHaveProperty("remaining").toEqualTypeOf<{ rho: number }>();
expectTypeOf(ranker.inspectNextUpload(round)).toEqualTypeOf<InspectedUpload>();
expectTypeOf<InspectedUpload>().toHaveProperty("bytes").toEqualTypeOf<Uint8Array>();
expectTypeOf(ranker.releaseNextUpload(round)).resolves.toEqualTypeOf<Uint8Array>();
expectTypeOf(ranker.exportLedger()).toEqualTypeOf<string>();
// @ts-expect-error a round needs its noise
ranker.inspectNextUpload({ roundId: "r1", modelVersion: "bundled", clipNorm: 1, granularity: 0.01 });

const catalog = ranker.embedCatalog(["a", "b"]);
expectTypeOf(catalog).toEqualTypeOf<EmbeddedCatalog>();
expectTypeOf(catalog).toEqualTypeOf<{ dimensions: number; vectors: Float32Array; tokenCounts: Uint32Array; tokenIds?: Uint32Array }>();
expectTypeOf(ranker.scoreCatalog(question, catalog)).resolves.toEqualTypeOf<Float32Array>();
expectTypeOf(await Ranker.create({ gpu: "always" })).toEqualTypeOf<Ranker>();
expectTypeOf(ranker.setGpu("off")).resolves.toEqualTypeOf<string | null>();
void ranker.setGpu(false);
// @ts-expect-error an unknown GPU mode
void ranker.setGpu("fast");
expectTypeOf(ranker.backend).toEqualTypeOf<"webgpu" | "cpu">();
expectTypeOf(ranker.gpuAdapter).toEqualTypeOf<string | null>();
// @ts-expect-error read-only
ranker.backend = "cpu";

expectTypeOf(ranker.embed(["a"])).toEqualTypeOf<Float32Array[]>();
expectTypeOf(ranker.tokenize("a")).toEqualTypeOf<Uint32Array>();
expectTypeOf(ranker.scoreTokenIds(new Uint32Array(1), [new Uint32Array(2)])).toEqualTypeOf<Float32Array>();
expectTypeOf(ranker.info).toEqualTypeOf<ModelInfo>();
expectTypeOf<ModelInfo>().toExtend<{
  contractVersion: string; dimensions: number; maxTokens: number; vocabSize: number; headParameters: number;
}>();
expectTypeOf(ranker.free()).toEqualTypeOf<void>();
expectTypeOf(ranker[Symbol.dispose]).toEqualTypeOf<() => void>();

expectTypeOf(diagnostics.sampleDiscreteGaussian(10, 100)).resolves.toEqualTypeOf<Float64Array>();
expectTypeOf(diagnostics.privatizeBenchmarkUpdate(1000)).resolves.toEqualTypeOf<number>();
expectTypeOf(diagnostics.sealBenchmarkReport(131)).resolves.toEqualTypeOf<number>();
