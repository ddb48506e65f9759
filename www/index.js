// The feedloop demo: pick a sample question (or type one), edit the candidate answers, and see them
// ranked by the on-device reward model. The package is imported exactly as an app would import it.
import { Ranker } from "feedloop";
import { mountFeedback, mountPrivacyPanel } from "feedloop/widget";
import { SAMPLES } from "./samples.js";

const $ = (id) => document.getElementById(id);
const form = $("rank-form");
const sampleSelect = $("sample");
const questionInput = $("question");
const candidatesInput = $("candidates");
const rankButton = $("rank");
const statusLine = $("status");
const resultsList = $("results");
const errorBox = $("error");
const modelInfo = $("model-info");
const activityList = $("activity");
const resetButton = $("reset-learning");
const storageStatus = $("storage-status");
const inspectButton = $("inspect-upload");
const inspectMetricsButton = $("inspect-metrics");
const metricsBox = $("metric-reports");
const uploadBox = $("upload");
const budgetLine = $("privacy-budget");

/** A round like the one a server announces, for previewing the next upload (never sent). */
const PREVIEW_ROUND = { roundId: "demo-preview", clipNorm: 1, granularity: 0.01, noiseStddev: 4 };

const RANK_DELAY_MS = 250; // debounce for ranking while typing

/**
 * What the end-to-end test (and a curious developer) can read from the page.
 * `lastRanking` is `[{ id, index, score, text }]`, best first; `index` is the 0-based input position.
 * `feedback` lists every FeedbackOutcome the ranker reported, in order (explicit and implicit).
 */
const demo = {
  ready: null,
  ranker: null,
  info: null,
  loadMs: null,
  rankMs: null,
  rankCount: 0,
  lastRanking: null,
  lastInput: null,
  feedback: [],
  rank: () => rankNow(),
  Ranker,
};
window.feedloopDemo = demo;

let ranker = null;
let loadMs = null;
let pendingRank = 0;

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

function describeError(error) {
  return error instanceof Error ? error.message : String(error);
}

function formatMs(ms) {
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms).toString();
}

function readCandidates() {
  return candidatesInput.value
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

function updateStatus() {
  const parts = [];
  if (loadMs !== null) parts.push(`Model loaded in ${formatMs(loadMs)} ms`);
  if (demo.rankMs !== null) {
    const n = demo.lastRanking?.length ?? 0;
    parts.push(`ranked ${n} candidate${n === 1 ? "" : "s"} in ${formatMs(demo.rankMs)} ms`);
  }
  statusLine.textContent = parts.join(" · ") || "Ready.";
}

function renderEmpty(message) {
  const item = document.createElement("li");
  item.className = "empty";
  item.textContent = message;
  resultsList.replaceChildren(item);
}

const KIND_LABELS = {
  thumbs: (o) => (o.up ? "▲ thumbs up" : "▼ thumbs down"),
  stars: () => "★ rating",
  pairwise: () => "A-or-B choice",
  correction: () => "✎ correction",
  flag: () => "⚑ flag",
  click: () => "click",
  dwell: () => "read",
  copy: () => "copy",
  regenerate: () => "regenerate",
  skip: () => "skip",
};

const observed = new Set();

function explainText(id) {
  const e = ranker.explain(id);
  const signed = (x) => (x >= 0 ? "+ " : "− ") + Math.abs(x).toFixed(3);
  return (
    `relevance ${e.relevance.toFixed(3)} ${signed(e.globalPreference)} (global model) ` +
    `${signed(e.personalAdjustment)} (your feedback) = ${e.score.toFixed(3)} · ` +
    `confidence ${Math.round(e.confidence * 100)} %`
  );
}

function renderRanking(ranking, candidates) {
  for (const element of observed) ranker.unobserve(element);
  observed.clear();
  const scores = ranking.map((r) => r.score);
  const max = Math.max(...scores);
  const min = Math.min(...scores);
  const spread = max - min;
  const items = ranking.map((entry, position) => {
    const item = document.createElement("li");
    item.dataset.index = String(entry.index);
    item.dataset.score = String(entry.score);
    item.dataset.rank = String(position + 1);
    if (position === 0) item.classList.add("best");

    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `${position + 1}.`;
    rank.setAttribute("aria-hidden", "true");

    const text = document.createElement("span");
    text.className = "text";
    text.textContent = candidates[entry.index];

    const meta = document.createElement("span");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = entry.score.toFixed(3);
    score.setAttribute("aria-label", `score ${entry.score.toFixed(3)}`);
    const origin = document.createElement("span");
    origin.className = "origin";
    origin.textContent = `was #${entry.index + 1}`;
    meta.append(score, origin);

    // Bar relative to the spread of this ranking (scores need not lie in [0, 1]).
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    const fraction = spread > 0 ? (entry.score - min) / spread : 1;
    fill.style.width = `${Math.round(8 + 92 * fraction)}%`;
    bar.append(fill);

    const tools = document.createElement("div");
    tools.className = "tools";
    const label = `answer ${position + 1}`;
    mountFeedback(tools, ranker, entry.id, {
      label,
      text: candidates[entry.index],
      onError: (error) => showError(describeError(error)),
    });
    const why = document.createElement("button");
    why.type = "button";
    why.textContent = "Why?";
    why.setAttribute("aria-expanded", "false");
    why.setAttribute("aria-label", `Why is ${label} ranked here?`);
    const explanation = document.createElement("p");
    explanation.className = "explanation";
    explanation.hidden = true;
    why.addEventListener("click", () => {
      explanation.hidden = !explanation.hidden;
      why.setAttribute("aria-expanded", String(!explanation.hidden));
      if (!explanation.hidden) explanation.textContent = explainText(entry.id);
    });
    tools.append(why);

    item.dataset.id = entry.id;
    item.append(rank, text, meta, bar, tools, explanation);
    // Implicit signals: clicks, copies and reading time on the answer's text.
    ranker.observe(text, entry.id);
    observed.add(text);
    return item;
  });
  resultsList.replaceChildren(...items);
}

/** Ranks the current question and candidates right away. Returns the ranking (or null). */
function rankNow() {
  clearTimeout(pendingRank);
  if (!ranker) return null;
  const question = questionInput.value.trim();
  const candidates = readCandidates();
  demo.lastInput = { question, candidates };

  if (candidates.length === 0) {
    demo.lastRanking = [];
    demo.rankMs = null;
    renderEmpty("Add at least one candidate answer, one per line.");
    resultsList.dataset.state = "empty";
    updateStatus();
    return demo.lastRanking;
  }

  try {
    const start = performance.now();
    const ranking = ranker.rank(question, candidates);
    const elapsed = performance.now() - start;
    demo.rankMs = elapsed;
    demo.rankCount += 1;
    demo.lastRanking = Array.from(ranking, ({ id, index, score }) => ({ id, index, score, text: candidates[index] }));
    clearError();
    renderRanking(demo.lastRanking, candidates);
    resultsList.dataset.state = "ready";
    resultsList.dataset.rankCount = String(demo.rankCount);
    updateStatus();
    return demo.lastRanking;
  } catch (error) {
    resultsList.dataset.state = "error";
    showError(`Ranking failed: ${describeError(error)}`);
    return null;
  }
}

function scheduleRank() {
  clearTimeout(pendingRank);
  pendingRank = setTimeout(rankNow, RANK_DELAY_MS);
}

function loadSample(id) {
  const sample = SAMPLES.find((s) => s.id === id);
  if (!sample) return;
  questionInput.value = sample.question;
  candidatesInput.value = sample.candidates.join("\n");
}

function showModelInfo(info) {
  for (const dd of modelInfo.querySelectorAll("dd[data-field]")) {
    const value = info?.[dd.dataset.field];
    dd.textContent = value === undefined || value === null ? "–" : Number.isFinite(value) ? value.toLocaleString("en-US") : String(value);
  }
}

function populateSamples() {
  for (const sample of SAMPLES) {
    const option = document.createElement("option");
    option.value = sample.id;
    option.textContent = sample.label;
    sampleSelect.append(option);
  }
  sampleSelect.value = SAMPLES[0].id;
  loadSample(SAMPLES[0].id);
}

sampleSelect.addEventListener("change", () => {
  if (sampleSelect.value) {
    loadSample(sampleSelect.value);
    rankNow();
  } else {
    questionInput.focus();
  }
});

// Editing the text makes it a custom question; rank shortly after typing stops.
for (const input of [questionInput, candidatesInput]) {
  input.addEventListener("input", () => {
    sampleSelect.value = "";
    scheduleRank();
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  rankNow();
});

function shorten(text, max = 48) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function positionOf(ranking, id) {
  const i = ranking?.findIndex((r) => r.id === id) ?? -1;
  return i < 0 ? null : i + 1;
}

/** Logs an outcome in the activity panel; explicit feedback re-ranks at once and says how it moved. */
function onFeedback(outcome) {
  demo.feedback.push(outcome);
  const activity = ranker.activity();
  const last = activity[activity.length - 1];
  const id = last?.candidates[0];
  const before = positionOf(demo.lastRanking, id);
  const explicit = ["thumbs", "stars", "pairwise", "correction", "flag"].includes(outcome.kind);
  if (explicit) rankNow();
  const after = positionOf(demo.lastRanking, id);
  const item = document.createElement("li");
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = new Date(last?.timestamp ?? Date.now()).toLocaleTimeString();
  const label = (KIND_LABELS[outcome.kind] ?? (() => outcome.kind))({ up: outcome.scoreAfter > outcome.scoreBefore });
  let text = `${label} on “${shorten(id ?? "")}”`;
  if (!outcome.learned) text += ` (not learned: ${outcome.reason})`;
  else if (explicit && before && after) text += before === after ? `: stays #${after}` : `: moved #${before} → #${after}`;
  text += ` · score ${outcome.scoreBefore.toFixed(3)} → ${outcome.scoreAfter.toFixed(3)}`;
  item.append(when, text);
  item.dataset.kind = outcome.kind;
  activityList.prepend(item);
  while (activityList.children.length > 20) activityList.lastElementChild.remove();
  if (explicit && before !== after) {
    resultsList.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.classList.add("moved");
  }
}

function showBudget() {
  const { policy, spent } = ranker.privacyReport();
  budgetLine.textContent =
    `Budget: ε = ${policy.epsilon} at δ = ${policy.delta} per ${policy.windowDays} days; ` +
    `spent ε = ${spent.windowEpsilon.toFixed(2)} in ${spent.releases} release${spent.releases === 1 ? "" : "s"}.`;
}

function inspectUpload() {
  try {
    const u = ranker.inspectNextUpload({ ...PREVIEW_ROUND, modelVersion: ranker.modelVersion });
    const head = Array.from(u.bytes.slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join(" ");
    uploadBox.textContent = [
      `${u.bytes.length} bytes, sha256 ${u.sha256}`,
      `first bytes: ${head} …  ("FLDP" = feedloop DP update)`,
      `clip C = ${u.decoded.clipNorm}, lattice γ = ${u.decoded.granularity}, noise σ = ${u.decoded.noiseStddev}, ${u.decoded.dimension} values`,
      `values (lattice units): ${u.decoded.values.slice(0, 12).join(", ")}, …`,
      `privacy cost: ρ = ${u.rho} (ε = ${u.epsilon.toFixed(2)} alone at δ = ${ranker.privacyReport().policy.delta}); ` +
        `window ε after release: ${u.windowEpsilonAfter.toFixed(2)}`,
    ].join("\n");
    uploadBox.hidden = false;
    uploadBox.dataset.sha256 = u.sha256;
  } catch (error) {
    showError(describeError(error));
  }
}

/** The payload inspector for metric reports: released bodies exactly as sent, noted ones as planned. */
function inspectMetrics() {
  const reports = ranker.pendingMetricReports();
  metricsBox.textContent =
    reports.length === 0
      ? "No metric report is waiting: each one is noted when you give feedback (with sharing on) and sent at the next sync."
      : reports
          .map((r) =>
            r.state === "released"
              ? `${r.kind} · v${r.modelVersion} · released (ledger #${r.ledgerIndex}), waiting to be sent to ${r.path}: ${r.body}`
              : `${r.kind} · v${r.modelVersion} · noted: at the next sync, {${r.fields.join(", ")}} to ${r.path}; ${r.mechanism}`,
          )
          .join("\n");
  metricsBox.hidden = false;
  metricsBox.dataset.count = String(reports.length);
}

// `make demo` serves this page from `feedloop serve`, started with this deployment key.
const DEMO_DEPLOYMENT_KEY = new URLSearchParams(location.search).get("key") ?? "feedloop-demo-deployment-key";

// ?server=https://…: a feedloop server on another origin (started with --cors-origin for this page's
// origin); by default the server this page came from.
const DEMO_SERVER = new URLSearchParams(location.search).get("server") ?? "";

// ?helper=sha256:…&minBatch=N: join secure rounds (two aggregators) of this helper. A site pins its
// privacy team's helper in its code; the demo takes it from the URL (`make demo` prints it).
const DEMO_HELPERS = new URLSearchParams(location.search).getAll("helper");
const DEMO_MIN_BATCH = Number(new URLSearchParams(location.search).get("minBatch") ?? "10");
// ?segment=de: the user's segment (one the server declares with --segment), e.g. their locale.
const DEMO_SEGMENT = new URLSearchParams(location.search).get("segment") ?? undefined;

/** The feedloop server to sync with, if it answers. */
async function detectServer() {
  try {
    const response = await fetch(`${DEMO_SERVER}/healthz`, { cache: "no-store" });
    const body = response.ok ? await response.json() : null;
    return body?.status === "ok" ? { url: DEMO_SERVER, deploymentKey: DEMO_DEPLOYMENT_KEY } : null;
  } catch {
    return null;
  }
}

function showSync(report) {
  $("sync-model").textContent =
    `version ${report.modelVersion}${report.modelUpdated ? " (just adopted: the ranking now uses it)" : ""}`;
  const r = report.round;
  $("sync-round").textContent = r
    ? `round ${r.roundId} on model ${r.modelVersion}: ${r.received} update${r.received === 1 ? "" : "s"} received` +
      (r.targetCount ? ` of ${r.targetCount}` : "") + ` (publishes with ≥ ${r.minCohort})`
    : "no round open";
  const c = report.contribution;
  $("sync-last").textContent = report.offline
    ? `server unreachable: ${report.error}`
    : c
      ? `contributed to round ${c.roundId} (ε = ${c.epsilon.toFixed(2)}, sha256 ${c.sha256.slice(0, 12)}…)`
      : `nothing sent: ${report.skipped}`;
  const pending = ranker.pendingUploads();
  $("sync-queued").textContent = pending.length
    ? pending.map((u) => `round ${u.roundId} (${u.attempts} attempt${u.attempts === 1 ? "" : "s"})`).join(", ")
    : "none";
  if (report.modelUpdated) rankNow();
  showBudget();
}

function showStorage() {
  const { name, persistent, lastError } = ranker.storage;
  storageStatus.textContent = lastError
    ? `Not saved: ${describeError(lastError)} (kept in memory; will retry)`
    : persistent
      ? `Saved in this browser (IndexedDB “${name}”).`
      : "Kept in memory only.";
}

async function start() {
  populateSamples();
  const begin = performance.now();
  try {
    demo.server = await detectServer();
    // ?sync=manual: only the "Sync now" button syncs (the end-to-end test uses it).
    const intervalMs = new URLSearchParams(location.search).get("sync") === "manual" ? 0 : 5000;
    const privacy = DEMO_HELPERS.length ? { helpers: DEMO_HELPERS, minSecureReports: DEMO_MIN_BATCH } : {};
    const segment = DEMO_SEGMENT === undefined ? {} : { segment: DEMO_SEGMENT };
    ranker = await Ranker.create(demo.server ? { server: demo.server, sync: { intervalMs }, privacy, ...segment } : { privacy, ...segment });
  } catch (error) {
    resultsList.dataset.state = "error";
    resultsList.setAttribute("aria-busy", "false");
    statusLine.textContent = "The model could not be loaded.";
    showError(`Could not load the model: ${describeError(error)}`);
    throw error;
  }
  loadMs = performance.now() - begin;
  demo.ranker = ranker;
  demo.loadMs = loadMs;
  demo.info = ranker.info;
  showModelInfo(demo.info);
  ranker.addEventListener("feedback", (e) => onFeedback(e.detail));
  ranker.addEventListener("saved", showStorage);
  ranker.addEventListener("error", (e) => {
    showStorage();
    showError(describeError(e.error));
  });
  inspectButton.addEventListener("click", inspectUpload);
  inspectMetricsButton.addEventListener("click", inspectMetrics);
  if (demo.server) {
    $("sync-panel").hidden = false;
    // The end user's consent: the demo contributes only after "Sharing is on".
    mountPrivacyPanel($("privacy-panel"), ranker, { onError: (error) => showError(describeError(error)) });
    ranker.addEventListener("sync", (e) => showSync(e.detail));
    $("sync-now").addEventListener("click", () => ranker.sync().catch(() => {}));
  }
  showBudget();
  resetButton.addEventListener("click", () => {
    ranker.resetLearning();
    activityList.replaceChildren();
    rankNow();
  });
  showStorage();
  rankButton.disabled = false;
  resultsList.setAttribute("aria-busy", "false");
  rankNow();
  return demo;
}

demo.ready = start();
// The error is already on the page; keep it from also surfacing as an unhandled rejection.
demo.ready.catch(() => {});
