// The feedloop dashboard: rounds, cohorts, model versions with their provenance, de-biased thumbs-up
// rates and ε per round, read from the server's public API (/v1/rounds, /v1/models, /v1/stats), with
// rollback for an admin (POST /v1/admin/rollback), and staged rollouts with their sequential tests
// (promote or withdraw a canary: POST /v1/admin/rollout/promote, /abort). Served by `feedloop serve --static-dir www/dist`.

import { budgetShareChart, cohortChart, epsilonChart, fixed, rateChart, rolloutDifferenceChart, rolloutRatesChart, segmentChart, starsChart, volumeChart } from "./dashboard-charts.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 5000;

/** What the end-to-end test reads. */
const dashboard = { loads: 0 };
window.feedloopDashboard = dashboard;

async function api(path, init) {
  const response = await fetch(path, { cache: "no-store", ...init });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body?.error ? `${body.error.code}: ${body.error.message}` : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function when(ms) {
  return ms == null ? "–" : new Date(ms).toLocaleString();
}


function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

/** A rate and its interval, e.g. "0.612 [0.55, 0.67] (812)". */
function rateWithInterval(estimate, interval, reports) {
  return estimate == null ? `– (${reports ?? 0} reports)` : `${fixed(estimate, 3)} [${fixed(interval[0], 2)}, ${fixed(interval[1], 2)}] (${reports})`;
}

function renderRollouts(stats) {
  const body = $("rollouts").tBodies[0];
  body.replaceChildren();
  if (stats.rollouts.length === 0) {
    const row = document.createElement("tr");
    cell(row, "No staged rollout yet (serve --canary-fraction).").colSpan = 10;
    body.append(row);
    return;
  }
  for (const r of [...stats.rollouts].reverse()) {
    const row = document.createElement("tr");
    row.dataset.rollout = r.version;
    row.dataset.status = r.status;
    const e = r.evidence;
    cell(row, `v${r.version}`);
    cell(row, `v${r.controlVersion}`);
    cell(row, `${fixed(100 * r.fraction, 0)} %`);
    cell(row, r.status.replace("_", " "));
    cell(row, e ? rateWithInterval(e.canary.thumbsUpRate, e.canary.confidenceSequence ?? [], e.canary.reports) : "–");
    cell(row, e ? rateWithInterval(e.control.thumbsUpRate, e.control.confidenceSequence ?? [], e.control.reports) : "–");
    cell(row, e?.difference ? `[${fixed(e.difference[0], 3)}, ${fixed(e.difference[1], 3)}] vs −${e.margin}` : "–");
    cell(row, e ? e.verdict.replace("_", " ") : "–");
    const decided = cell(row, r.decidedAt == null ? "–" : `${when(r.decidedAt)} by ${r.decidedBy}`);
    if (r.reason) decided.title = r.reason;
    const action = cell(row, "");
    if (r.status === "canary" || r.status === "awaiting_approval") {
      for (const [label, path] of [["Promote", "promote"], ["Withdraw", "abort"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = `${label} v${r.version}`;
        button.addEventListener("click", () => adminPost(`/v1/admin/rollout/${path}`, `${label} v${r.version}?`));
        action.append(button);
      }
    }
    body.append(row);
  }
}

function renderVersions(models, stats) {
  const rates = new Map(stats.versions.map((v) => [v.version, v]));
  const canaries = new Set(stats.rollouts.filter((r) => r.status === "canary" || r.status === "awaiting_approval").map((r) => r.version));
  const body = $("versions").tBodies[0];
  body.replaceChildren();
  for (const v of [...models.versions].reverse()) {
    const row = document.createElement("tr");
    row.dataset.version = v.version;
    if (v.current) row.classList.add("current");
    if (v.flagged) row.classList.add("flagged");
    cell(row, `v${v.version}${v.current ? " (current)" : canaries.has(v.version) ? " (canary)" : ""}`);
    cell(row, v.roundId ? `round ${v.roundId} on v${v.parentVersion}` : v.parentVersion ? `rollback of v${v.parentVersion}` : "base model");
    cell(row, v.cohortSize ?? "–");
    cell(row, v.optimizer ?? "–");
    cell(row, v.noise.clipNorm == null ? "–" : `${v.noise.clipNorm}, ${v.noise.granularity}, ${v.noise.noiseStddev}`);
    cell(row, fixed(v.privacy.epsilonPerParticipant));
    const r = rates.get(v.version);
    // Randomized reports, then sealed ones (`--secure-metrics`): released in batches, and waiting.
    const sealed = r?.sealed?.thumbs;
    const counted = `${r?.reports ?? 0}${sealed ? ` + ${sealed.reports} sealed${sealed.pending ? `, ${sealed.pending} waiting for a batch` : ""}` : ""}`;
    const thumbs = cell(row, r?.thumbsUpRate == null ? `– (${counted} reports)` : `${fixed(r.thumbsUpRate, 3)} [${fixed(r.ci95[0], 2)}, ${fixed(r.ci95[1], 2)}] (${counted})`);
    thumbs.dataset.sealed = String(sealed?.reports ?? 0);
    // The de-biased mean rating (5-ary randomized response) and its interval.
    cell(row, r?.stars == null ? "– (0 ratings)" : `${fixed(r.stars.mean, 2)} [${fixed(r.stars.ci95[0], 2)}, ${fixed(r.stars.ci95[1], 2)}] (${r.stars.reports})`);
    // Federated evaluation: how often this version's model already preferred its users' A-or-B choice.
    cell(row, r?.agreement == null ? "– (0 reports)" : rateWithInterval(r.agreement.rate, r.agreement.ci95, r.agreement.reports));
    const published = cell(row, when(v.createdAt));
    if (v.flagged) published.textContent += ` · drift: ${v.flagReason}`;
    const action = cell(row, "");
    if (!v.current) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `Roll back to v${v.version}`;
      button.addEventListener("click", () => rollback(v.version));
      action.append(button);
    }
    body.append(row);
  }
}

/** Local DP, or secure with the helper's identity, its minimum batch and σ on the sum. */
function aggregation(r) {
  if (r.aggregation !== "secure" || !r.secure) return `local (σ = ${r.noiseStddev} per device)`;
  const fp = r.secure.helperFingerprint.replace(/^sha256:/, "").slice(0, 12);
  return `secure: helper ${fp}…, ≥ ${r.secure.minReports} reports, σ = ${r.noiseStddev} on the sum`;
}

/**
 * What needs a person's attention, newest first: versions the drift test flagged, canaries the
 * sequential test rolled back or that wait for approval, and disparities between segments.
 */
function renderAlerts(stats) {
  const alerts = [];
  for (const v of stats.versions) {
    if (v.flagged) alerts.push({ kind: "drift", version: v.version, text: `v${v.version}: thumbs-up rate drifted — ${v.flagReason}` });
    const d = v.segments?.disparity;
    if (d?.flagged) {
      alerts.push({
        kind: "disparity",
        version: v.version,
        text:
          `v${v.version}: thumbs-up rate of segment ${d.higher} exceeds ${d.lower} by ${fixed(d.difference, 3)} ` +
          `[${fixed(d.interval[0], 3)}, ${fixed(d.interval[1], 3)}] at ${fixed(100 * d.confidence, 1)} %, beyond the ${d.margin} margin`,
      });
    }
  }
  for (const r of stats.rollouts) {
    if (r.status === "rolled_back") alerts.push({ kind: "rollback", version: r.version, text: `canary v${r.version} rolled back (${r.decidedBy ?? "?"}): ${r.reason ?? ""}` });
    if (r.status === "awaiting_approval") alerts.push({ kind: "approval", version: r.version, text: `canary v${r.version} awaits an admin's approval: ${r.reason ?? ""}` });
  }
  alerts.sort((a, b) => Number(b.version) - Number(a.version));
  const list = $("alerts");
  list.replaceChildren();
  for (const a of alerts) {
    const item = document.createElement("li");
    item.dataset.kind = a.kind;
    item.textContent = a.text;
    list.append(item);
  }
  if (alerts.length === 0) {
    const item = document.createElement("li");
    item.className = "none";
    item.textContent = "No alerts.";
    list.append(item);
  }
}

function renderRounds(rounds) {
  const body = $("rounds").tBodies[0];
  body.replaceChildren();
  for (const r of rounds) {
    const row = document.createElement("tr");
    row.dataset.round = r.roundId;
    row.dataset.status = r.status;
    cell(row, r.roundId);
    cell(row, `v${r.modelVersion}`);
    cell(row, r.status + (r.closeReason ? ` (${r.closeReason})` : ""));
    cell(row, aggregation(r));
    cell(row, r.received);
    cell(row, `${r.minCohort} / ${r.targetCount ?? "–"}`);
    cell(row, `${fixed(r.privacy.epsilonPerParticipant)} (${r.privacy.delta})`);
    cell(row, when(r.createdAt));
    cell(row, when(r.closedAt));
    cell(row, r.publishedVersion ? `v${r.publishedVersion}` : "–");
    body.append(row);
  }
}

function renderCharts(rounds, stats) {
  const chronological = [...rounds].reverse();
  cohortChart("chart-cohort", chronological);
  epsilonChart("chart-epsilon", chronological);
  budgetShareChart("chart-budget", chronological, stats.deviceBudget);
  rateChart(
    "chart-rate",
    stats.versions.map((v) => ({ version: v.version, rate: v.thumbsUpRate, ci95: v.ci95, reports: v.reports, flagged: v.flagged })),
    "Thumbs-up rate per version",
  );
  rateChart(
    "chart-agreement",
    stats.versions.filter((v) => v.agreement).map((v) => ({ version: v.version, rate: v.agreement.rate, ci95: v.agreement.ci95, reports: v.agreement.reports, flagged: v.flagged })),
    "Model agreement per version",
  );
  starsChart("chart-stars", stats.versions);
  segmentChart("chart-segments", stats.versions);
  volumeChart("chart-volume", stats.feedbackVolume);
  const latest = stats.rollouts.at(-1);
  rolloutRatesChart("chart-rollout-rates", latest);
  rolloutDifferenceChart("chart-rollout-difference", latest);
  return chronological.filter((r) => r.status !== "open").length;
}

/** An admin action without a body (promote or withdraw a canary), after a confirmation. */
async function adminPost(path, question) {
  const key = $("admin-key").value.trim();
  if (!key) {
    showError("Enter the admin key first.");
    $("admin-key").focus();
    return;
  }
  if (!confirm(question)) return;
  try {
    await api(path, { method: "POST", headers: { authorization: `Bearer ${key}` } });
    sessionStorage.setItem("feedloop-admin-key", key);
    await refresh();
  } catch (error) {
    showError(`Failed: ${error.message}`);
  }
}

async function rollback(version) {
  const key = $("admin-key").value.trim();
  if (!key) {
    showError("Enter the admin key to roll back.");
    $("admin-key").focus();
    return;
  }
  if (!confirm(`Make v${version} the current model? The open round (if any) is aborted.`)) return;
  try {
    await api("/v1/admin/rollback", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ version }),
    });
    sessionStorage.setItem("feedloop-admin-key", key);
    await refresh();
  } catch (error) {
    showError(`Rollback failed: ${error.message}`);
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function refresh() {
  try {
    const [rounds, models, stats] = await Promise.all([api("/v1/rounds?limit=200"), api("/v1/models"), api("/v1/stats")]);
    renderVersions(models, stats);
    renderRollouts(stats);
    renderAlerts(stats);
    renderRounds(rounds.rounds);
    const closed = renderCharts(rounds.rounds, stats);
    $("status").textContent =
      `Current model v${models.current} · ${models.versions.length} version${models.versions.length === 1 ? "" : "s"} · ` +
      `${closed} closed round${closed === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.state = "ready";
    dashboard.loads += 1;
    dashboard.current = models.current;
    dashboard.rollouts = stats.rollouts.map((r) => ({ version: r.version, status: r.status }));
    showError("");
  } catch (error) {
    document.body.dataset.state = "error";
    showError(`Could not load: ${error.message}`);
  }
}

$("admin-key").value = sessionStorage.getItem("feedloop-admin-key") ?? "";
refresh();
setInterval(refresh, REFRESH_MS);
