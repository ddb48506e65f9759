// The feedloop demo: pick a sample question (or type one), edit the candidate answers, and see them
// ranked by the on-device reward model. The package is imported exactly as an app would import it.
import { Ranker } from "feedloop";
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

const RANK_DELAY_MS = 250; // debounce for ranking while typing

/**
 * What the end-to-end test (and a curious developer) can read from the page.
 * `lastRanking` is `[{ index, score, text }]`, best first; `index` is the 0-based input position.
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
  rank: () => rankNow(),
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

function renderRanking(ranking, candidates) {
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

    item.append(rank, text, meta, bar);
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
    demo.lastRanking = Array.from(ranking, ({ index, score }) => ({ index, score, text: candidates[index] }));
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

async function start() {
  populateSamples();
  const begin = performance.now();
  try {
    ranker = await Ranker.create();
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
  rankButton.disabled = false;
  resultsList.setAttribute("aria-busy", "false");
  rankNow();
  return demo;
}

demo.ready = start();
// The error is already on the page; keep it from also surfacing as an unhandled rejection.
demo.ready.catch(() => {});
