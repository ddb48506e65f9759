// The dashboard's charts, drawn with Observable Plot (d3 underneath) from the server's API bodies.
// Every mark carries a <title> with the number it draws, formatted as the tables format it: a
// reader hovering a mark (and the end-to-end test) reads the API's value, not a pixel estimate.

import * as Plot from "@observablehq/plot";

const WIDTH = 460;
const HEIGHT = 190;

/** The same rounding as the tables. */
export function fixed(x, digits = 2) {
  return x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}

/** Draws `plot` into the element `id`, or a "no data yet" note when there is nothing to draw. */
function draw(id, hasData, plot) {
  const container = document.getElementById(id);
  if (!hasData) {
    const empty = document.createElement("p");
    empty.className = "chart-empty";
    empty.textContent = "no data yet";
    container.replaceChildren(empty);
    return;
  }
  container.replaceChildren(plot());
}

const base = (label) => ({ width: WIDTH, height: HEIGHT, ariaLabel: label, style: { background: "transparent" } });

/** Rounds, oldest first: the cohort each one closed with (received so far while open). */
export function cohortChart(id, rounds) {
  const data = rounds.map((r) => ({ round: String(r.roundId), cohort: r.cohortSize ?? r.received, open: r.status === "open", min: r.minCohort }));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Cohort size per round"),
      x: { label: "round", type: "band", tickFormat: (d, i) => (data.length <= 16 || i % Math.ceil(data.length / 16) === 0 ? d : "") },
      y: { label: "devices", grid: true, nice: true },
      marks: [
        Plot.barY(data, { x: "round", y: "cohort", fill: (d) => (d.open ? "open" : "closed"), title: (d) => `round ${d.round}: ${d.cohort} devices${d.open ? " so far" : ""}` }),
        Plot.ruleY(data.slice(-1), { y: "min", strokeDasharray: "4 3", title: (d) => `minimum cohort ${d.min}` }),
        Plot.ruleY([0]),
      ],
      color: { domain: ["closed", "open"], range: ["#4269d0", "#a0b4e8"] },
    }),
  );
}

/** ε per participant of each round. */
export function epsilonChart(id, rounds) {
  const data = rounds.map((r) => ({ round: String(r.roundId), epsilon: r.privacy.epsilonPerParticipant }));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Epsilon per participant per round"),
      x: { label: "round", type: "point" },
      y: { label: "ε", grid: true, zero: true },
      marks: [
        Plot.lineY(data, { x: "round", y: "epsilon", stroke: "#4269d0" }),
        Plot.dot(data, { x: "round", y: "epsilon", fill: "#4269d0", title: (d) => `round ${d.round}: ε = ${fixed(d.epsilon)}` }),
      ],
    }),
  );
}

/**
 * A de-biased rate per version with its 95 % interval: `rows` are `{version, rate, ci95, reports,
 * flagged}`. Flagged versions are drawn in red.
 */
export function rateChart(id, rows, label) {
  const data = rows.filter((r) => r.rate != null).map((r) => ({ ...r, v: `v${r.version}`, lo: r.ci95[0], hi: r.ci95[1] }));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base(label),
      x: { label: "version", type: "point", padding: 0.6 },
      y: { label: "rate", domain: [0, 1], grid: true },
      marks: [
        Plot.ruleX(data, { x: "v", y1: (d) => Math.max(0, d.lo), y2: (d) => Math.min(1, d.hi), stroke: (d) => (d.flagged ? "#d03c3c" : "#4269d0") }),
        Plot.dot(data, {
          x: "v",
          y: "rate",
          r: 4,
          fill: (d) => (d.flagged ? "#d03c3c" : "#4269d0"),
          title: (d) => `${d.v}: ${fixed(d.rate, 3)} [${fixed(d.lo, 2)}, ${fixed(d.hi, 2)}] (${d.reports} reports)`,
        }),
      ],
    }),
  );
}

/** The de-biased share of each star rating, one line per version (the latest six). */
export function starsChart(id, versions) {
  const rated = versions.filter((v) => v.stars != null).slice(-6);
  const data = rated.flatMap((v) => v.stars.distribution.map((share, i) => ({ v: `v${v.version}`, stars: i + 1, share, reports: v.stars.reports })));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Star ratings per version"),
      x: { label: "stars", ticks: [1, 2, 3, 4, 5], domain: [1, 5] },
      y: { label: "share (de-biased)", grid: true, zero: true },
      color: { legend: true, type: "ordinal", scheme: "tableau10" },
      marks: [
        Plot.lineY(data, { x: "stars", y: "share", stroke: "v" }),
        Plot.dot(data, { x: "stars", y: "share", fill: "v", title: (d) => `${d.v} ${d.stars}★: ${fixed(d.share, 3)} (${d.reports} ratings)` }),
        Plot.ruleY([0]),
      ],
    }),
  );
}

/** The latest rollout: canary and control rates over time (the reports received by each moment). */
export function rolloutRatesChart(id, rollout) {
  const history = rollout?.history ?? [];
  const data = history.flatMap((p) => [
    { at: new Date(p.at), arm: `canary v${rollout.version}`, rate: p.canaryRate, reports: p.canaryReports },
    { at: new Date(p.at), arm: `control v${rollout.controlVersion}`, rate: p.controlRate, reports: p.controlReports },
  ]).filter((d) => d.rate != null);
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Canary and control thumbs-up rate over time"),
      x: { label: "time", type: "time" },
      y: { label: "thumbs-up rate", domain: [0, 1], grid: true },
      color: { legend: true, domain: [`canary v${rollout.version}`, `control v${rollout.controlVersion}`], range: ["#ef8a2b", "#4269d0"] },
      marks: [
        Plot.lineY(data, { x: "at", y: (d) => Math.max(0, Math.min(1, d.rate)), stroke: "arm", curve: "step-after" }),
        Plot.dot(data.slice(-2), { x: "at", y: (d) => Math.max(0, Math.min(1, d.rate)), fill: "arm", title: (d) => `${d.arm}: ${fixed(d.rate, 3)} (${d.reports} reports)` }),
      ],
    }),
  );
}

/**
 * The latest rollout's always-valid interval of p_canary − p_control over time, with the decision
 * boundary at −margin: the canary is rolled back once the whole band lies below it.
 */
export function rolloutDifferenceChart(id, rollout) {
  const margin = rollout?.evidence?.margin;
  const data = (rollout?.history ?? []).filter((p) => p.difference).map((p) => ({ at: new Date(p.at), lo: p.difference[0], hi: p.difference[1], n: p.canaryReports }));
  draw(id, data.length > 0 && margin != null, () =>
    Plot.plot({
      ...base("Canary minus control, always-valid interval, with the rollback boundary"),
      x: { label: "time", type: "time" },
      y: { label: "canary − control", domain: [-1, 1], grid: true },
      marks: [
        Plot.areaY(data, { x: "at", y1: (d) => Math.max(-1, d.lo), y2: (d) => Math.min(1, d.hi), fill: "#ef8a2b", fillOpacity: 0.3, curve: "step-after" }),
        Plot.ruleY([0], { stroke: "#888" }),
        Plot.ruleY([-margin], { stroke: "#d03c3c", strokeDasharray: "4 3", title: () => `rollback boundary −${margin}` }),
        Plot.dot(data.slice(-1), { x: "at", y: (d) => (d.lo + d.hi) / 2, fill: "#ef8a2b", title: (d) => `[${fixed(d.lo, 3)}, ${fixed(d.hi, 3)}] after ${d.n} canary reports` }),
      ],
    }),
  );
}

/**
 * Feedback volume per day by kind: the estimated number of devices that gave each kind of
 * feedback, from the kinds reports received that day (each device reports one sampled kind per
 * version, randomized). Unbiased estimates below zero are drawn as zero; the titles keep them.
 */
export function volumeChart(id, volume) {
  const data = volume.map((v) => ({ ...v, date: new Date(`${v.day}T00:00:00Z`) }));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Feedback volume per day by kind"),
      x: { label: "day (UTC)", type: "band", tickFormat: (d) => new Date(d).toISOString().slice(5, 10) },
      y: { label: "devices (estimated)", grid: true, nice: true },
      color: { legend: true, type: "ordinal", scheme: "tableau10" },
      marks: [
        Plot.barY(data, {
          x: "date",
          y: (d) => Math.max(0, d.devices),
          fill: "kind",
          title: (d) => `${d.day} ${d.kind}: ≈ ${fixed(d.devices, 0)} devices [${fixed(d.ci95[0], 0)}, ${fixed(d.ci95[1], 0)}] (${d.reports} reports)`,
        }),
        Plot.ruleY([0]),
      ],
    }),
  );
}

/**
 * The thumbs-up rate per declared segment on the latest version with segment reports, with 95 %
 * intervals; the pair the disparity test names is drawn in red when it is flagged. Segments whose
 * rate is unknown (share indistinguishable from 0) are left out; the titles carry the numbers.
 */
export function segmentChart(id, versions) {
  const latest = versions.filter((v) => v.segments != null).at(-1);
  const flagged = latest?.segments.disparity?.flagged ? new Set([latest.segments.disparity.higher, latest.segments.disparity.lower]) : new Set();
  const data = (latest?.segments.segments ?? [])
    .filter((s) => s.thumbsUpRate != null)
    .map((s) => ({ ...s, lo: s.ci95[0], hi: s.ci95[1], v: `v${latest.version}`, flagged: flagged.has(s.segment) }));
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base(`Thumbs-up rate per segment, v${latest.version}`),
      x: { label: `segment (v${latest.version})`, type: "point", padding: 0.6 },
      y: { label: "thumbs-up rate", domain: [0, 1], grid: true },
      marks: [
        Plot.ruleX(data, { x: "segment", y1: (d) => Math.max(0, d.lo), y2: (d) => Math.min(1, d.hi), stroke: (d) => (d.flagged ? "#d03c3c" : "#4269d0") }),
        Plot.dot(data, {
          x: "segment",
          y: (d) => Math.max(0, Math.min(1, d.thumbsUpRate)),
          r: 4,
          fill: (d) => (d.flagged ? "#d03c3c" : "#4269d0"),
          title: (d) => `${d.v} ${d.segment}: ${fixed(d.thumbsUpRate, 3)} [${fixed(d.lo, 2)}, ${fixed(d.hi, 2)}] (share ${fixed(d.share, 2)})`,
        }),
      ],
    }),
  );
}

/**
 * What each round costs a participant as a share of the package's default device budget (ρ of the
 * round over the budget's total ρ: zCDP composes by adding ρ), and the running share over the
 * budget's window for a device that took part in every round. A device refuses a round once its
 * own budget would be exceeded, so the running line above 100 % means devices sat rounds out.
 */
export function budgetShareChart(id, rounds, budget) {
  const windowMs = budget.windowDays * 86_400_000;
  const data = rounds.map((r, i) => {
    const since = r.createdAt - windowMs;
    const running = rounds.slice(0, i + 1).filter((x) => x.createdAt > since).reduce((sum, x) => sum + x.privacy.rho, 0);
    return { round: String(r.roundId), share: (100 * r.privacy.rho) / budget.totalRho, running: (100 * running) / budget.totalRho };
  });
  draw(id, data.length > 0, () =>
    Plot.plot({
      ...base("Share of the default device budget per round"),
      x: { label: "round", type: "band", tickFormat: (d, i) => (data.length <= 16 || i % Math.ceil(data.length / 16) === 0 ? d : "") },
      y: { label: "% of the device budget", grid: true, zero: true },
      marks: [
        Plot.barY(data, { x: "round", y: "share", fill: "#4269d0", title: (d) => `round ${d.round}: ${fixed(d.share, 1)} % of the budget (running ${fixed(d.running, 1)} % over ${budget.windowDays} days)` }),
        Plot.lineY(data, { x: "round", y: "running", stroke: "#ef8a2b" }),
        Plot.ruleY([100], { stroke: "#d03c3c", strokeDasharray: "4 3", title: () => `the whole budget: ε = ${budget.epsilon} at δ = ${budget.delta} per ${budget.windowDays} days` }),
      ],
    }),
  );
}
