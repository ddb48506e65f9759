// End-to-end segments: the real server declares two segments (`--segment en,de`) and a Chromium
// device on the demo page says its user is in "de" (`Ranker.create({ segment })`). After a thumbs
// on the top answer, the sync sends a segment report whose body is only the version, the number of
// segments and one randomized cell — no segment name — recorded in the ledger first. Simulated
// devices (plain HTTP, cells as sent) then make one segment's rate clearly lower; the dashboard
// charts the per-segment rates the API computes and lists the disparity among its alerts.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { launchChromium } from "../../tools/chromium.mjs";
import { freePort, startServer } from "./server.mjs";

const DEPLOYMENT_KEY = "e2e-deployment-key-0123456789";
const ADMIN_KEY = "e2e-admin-key-0123456789";
const TIMEOUT = 90_000;

async function json(base, route, init) {
  const response = await fetch(`${base}${route}`, init);
  assert.ok(response.ok, `${route}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

describe("segments: the thumbs-up rate per declared segment, the segment only inside a randomized cell", () => {
  let dataDir;
  let server;
  let browser;
  const problems = [];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-e2e-segments-"));
    server = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      adminKey: ADMIN_KEY,
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 4, minCohort: 2, targetCount: 2, durationSeconds: 600 },
      // ε = 0.5 per metric report (ρ = 0.125): thumbs, kinds and segment reports and an update fit
      // the device's default budget (ε = 8 at δ = 1e-6).
      extraArgs: ["--segment", "en,de", "--rr-epsilon", "0.5", "--register-rate-per-minute", "0"],
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test("a device reports (segment, thumbs) as one randomized cell; the dashboard shows rates per segment and the disparity", { timeout: TIMEOUT }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const bodies = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    context.on("request", (request) => {
      const body = request.postDataBuffer();
      if (body && body.length > 0) bodies.push({ url: request.url(), body });
    });
    await page.goto(`${server.base}/?sync=manual&key=${DEPLOYMENT_KEY}&segment=de`);
    await page.evaluate(() => window.feedloopDemo.ready);
    await page.getByRole("switch", { name: "Sharing is off" }).click();
    await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
    const sync = () => page.evaluate(() => window.feedloopDemo.ranker.sync());
    assert.equal((await sync()).modelVersion, "1", "the device runs the server's v1");
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-up"]');
    // The payload inspector lists the noted reports: what will leave and how, not the verdict.
    const noted = await page.evaluate(() => window.feedloopDemo.ranker.pendingMetricReports());
    assert.deepEqual(noted.map((r) => [r.kind, r.state]), [["thumbs", "noted"], ["kinds", "noted"], ["segments", "noted"]]);
    assert.deepEqual(noted[2].fields, ["modelVersion", "segments", "cell"]);
    await page.click("#inspect-metrics");
    const shown = await page.textContent("#metric-reports");
    assert.match(shown, /segments · v1 · noted: at the next sync, \{modelVersion, segments, cell\}/);
    assert.ok(!JSON.stringify(noted).includes('"de"'), "the inspector does not echo the segment");
    const report = await sync();
    const kinds = report.metrics.map((m) => [m.kind, m.modelVersion, m.delivered]);
    assert.deepEqual(kinds, [["thumbs", "1", true], ["kinds", "1", true], ["segments", "1", true]], JSON.stringify(report));
    const sent = bodies.filter((b) => b.url.endsWith("/v1/feedback/segments"));
    assert.equal(sent.length, 1);
    const body = JSON.parse(sent[0].body.toString("utf8"));
    assert.deepEqual(Object.keys(body).sort(), ["cell", "modelVersion", "segments"], "only the version, the list's length and the cell");
    assert.equal(body.segments, 2);
    assert.ok(Number.isInteger(body.cell) && body.cell >= 0 && body.cell < 4, JSON.stringify(body));
    for (const b of bodies) assert.ok(!b.body.toString("utf8").includes('"de"'), `${b.url} carries no segment label`);
    // In the ledger first, with the exact cell sent (4 little-endian bytes) and its mechanism.
    const ledger = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()));
    const entry = ledger.entries.find((e) => e.round_id === "segments@1");
    assert.ok(entry, "the segment report is in the ledger");
    const cell = Buffer.alloc(4);
    cell.writeUInt32LE(body.cell);
    assert.equal(entry.payload_sha256, createHash("sha256").update(cell).digest("hex"));
    assert.deepEqual([entry.params.mechanism, entry.params.categories], ["categorical_response", 4], JSON.stringify(entry.params));
    assert.equal(report.metrics[2].sha256, entry.payload_sha256);
    assert.equal((await sync()).metrics.length, 0, "one segment report per version");
    await context.close();

    // 1,000 simulated devices, half "en" with 90 % thumbs up, half "de" with 10 %, each cell
    // randomized as a device does (4-ary randomized response at ε = 0.5; a seeded generator).
    let seed = 7;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const keep = Math.exp(0.5) / (Math.exp(0.5) + 3);
    const SIMULATED = 1000;
    for (let i = 0; i < SIMULATED; i++) {
      const grant = await json(server.base, "/v1/clients/register", { method: "POST", headers: { "x-feedloop-deployment-key": DEPLOYMENT_KEY } });
      const segment = i % 2;
      const up = random() < (segment === 0 ? 0.9 : 0.1);
      const trueCell = 2 * segment + (up ? 1 : 0);
      let cellSent = trueCell;
      if (random() >= keep) cellSent = (trueCell + 1 + Math.floor(random() * 3)) % 4;
      const response = await fetch(`${server.base}/v1/feedback/segments`, {
        method: "POST",
        headers: { authorization: `Bearer ${grant.token}`, "content-type": "application/json" },
        body: JSON.stringify({ modelVersion: "1", segments: 2, cell: cellSent }),
      });
      assert.equal(response.status, 202, await response.text());
    }
    const stats = await json(server.base, "/v1/stats");
    assert.deepEqual(stats.segments, ["en", "de"]);
    const v1 = stats.versions.find((v) => v.version === "1");
    assert.equal(v1.segments.reports, SIMULATED + 1);
    assert.equal(v1.segments.disparity.flagged, true, JSON.stringify(v1.segments));
    assert.deepEqual([v1.segments.disparity.higher, v1.segments.disparity.lower], ["en", "de"]);

    const dashboard = await (await browser.newContext()).newPage();
    dashboard.on("pageerror", (e) => problems.push(`dashboard page error: ${e.message}`));
    await dashboard.goto(`${server.base}/dashboard.html`);
    await dashboard.waitForFunction(() => window.feedloopDashboard?.loads > 0, null, { timeout: TIMEOUT });
    const titles = await dashboard.$$eval("#chart-segments title", (ts) => ts.map((t) => t.textContent));
    for (const s of v1.segments.segments) {
      const title = `v1 ${s.segment}: ${s.thumbsUpRate.toFixed(3)} [${s.ci95[0].toFixed(2)}, ${s.ci95[1].toFixed(2)}] (share ${s.share.toFixed(2)})`;
      assert.ok(titles.includes(title), `${JSON.stringify(titles)} has ${title}`);
    }
    // The budget-share chart: each round's ρ over the default device budget's total ρ.
    const rounds = (await json(server.base, "/v1/rounds")).rounds;
    const budgetTitles = await dashboard.$$eval("#chart-budget title", (ts) => ts.map((t) => t.textContent));
    for (const r of rounds) {
      const share = ((100 * r.privacy.rho) / stats.deviceBudget.totalRho).toFixed(1);
      assert.ok(budgetTitles.some((t) => t.startsWith(`round ${r.roundId}: ${share} % of the budget`)), `${JSON.stringify(budgetTitles)} has round ${r.roundId}`);
    }
    const alerts = await dashboard.$$eval('#alerts li[data-kind="disparity"]', (ls) => ls.map((l) => l.textContent));
    const d = v1.segments.disparity;
    assert.equal(alerts.length, 1, JSON.stringify(alerts));
    assert.ok(alerts[0].startsWith(`v1: thumbs-up rate of segment en exceeds de by ${d.difference.toFixed(3)} [${d.interval[0].toFixed(3)}, ${d.interval[1].toFixed(3)}]`), alerts[0]);
    assert.deepEqual(problems, []);
  });
});
