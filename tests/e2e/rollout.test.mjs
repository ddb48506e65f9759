// End-to-end staged rollout: the real server with `--canary-fraction 0.5` and Chromium devices on
// the demo page. Two devices with the user's consent contribute; the round publishes v2 as a
// canary. Devices without consent sync: each is served its arm's version (the server's rule:
// SHA-256 of the version and the client id, recomputed here) and sends nothing at all. Simulated
// devices (plain HTTP: the canary's users unhappy, the control's happy) report thumbs; the server's
// sequential test rolls v2 back by itself, the canary device moves back to v1 at its next sync, and
// the dashboard shows the rollout and its verdict.
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

/** The server's canary rule (`feedloop_core::rollout::in_canary`), written out independently. */
function inCanary(clientId, version, fraction) {
  const hash = createHash("sha256");
  for (const part of ["feedloop-canary", version, clientId].map((s) => Buffer.from(s, "utf8"))) {
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(part.length));
    hash.update(length).update(part);
  }
  const top = hash.digest().readBigUInt64BE(0);
  return Number(top >> 11n) / 2 ** 53 < fraction;
}

describe("staged rollout: a worse canary is rolled back by the server, Chromium devices follow", () => {
  let dataDir;
  let server;
  let browser;
  const problems = [];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-e2e-rollout-"));
    server = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      adminKey: ADMIN_KEY,
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 4, minCohort: 2, targetCount: 2, durationSeconds: 600 },
      extraArgs: ["--canary-fraction", "0.5", "--canary-reports", "20", "--drift-min-reports", "10", "--rr-epsilon", "2",
        "--register-rate-per-minute", "0"],
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  async function device({ consent }) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const sent = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    context.on("request", (request) => {
      const body = request.postDataBuffer();
      if (body && body.length > 0) sent.push(request.url());
    });
    await page.goto(`${server.base}/?sync=manual&key=${DEPLOYMENT_KEY}`);
    await page.evaluate(() => window.feedloopDemo.ready);
    if (consent) {
      await page.getByRole("switch", { name: "Sharing is off" }).click();
      await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
    }
    const sync = () => page.evaluate(() => window.feedloopDemo.ranker.sync());
    return { context, page, sent, sync };
  }

  test("v2 is a canary: each device runs its arm's version; the worse canary is rolled back and its devices return to v1", { timeout: TIMEOUT }, async () => {
    // Two consenting devices contribute; the round publishes v2, which becomes a canary.
    for (let i = 0; i < 2; i++) {
      const d = await device({ consent: true });
      await d.page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
      await d.page.click('#results li[data-rank="2"] [data-feedloop="thumbs-up"]');
      const report = await d.sync();
      assert.ok(report.contribution, JSON.stringify(report));
      await d.context.close();
    }
    assert.equal((await json(server.base, "/v1/rounds/1")).publishedVersion, "2");
    assert.equal((await json(server.base, "/v1/models")).current, "1", "v2 is not current yet");
    let stats = await json(server.base, "/v1/stats");
    assert.deepEqual(stats.rollouts.map((r) => [r.version, r.controlVersion, r.status]), [["2", "1", "canary"]]);

    // Devices without consent: one in each arm (new devices until both arms have one).
    const viewers = { canary: null, control: null };
    for (let i = 0; i < 12 && !(viewers.canary && viewers.control); i++) {
      const d = await device({ consent: false });
      const report = await d.sync();
      assert.equal(report.offline, false, JSON.stringify(report));
      const arm = inCanary(report.clientId, "2", 0.5) ? "canary" : "control";
      assert.equal(report.modelVersion, arm === "canary" ? "2" : "1", `${arm} device: ${JSON.stringify(report)}`);
      if (viewers[arm]) await d.context.close();
      else viewers[arm] = d;
    }
    assert.ok(viewers.canary && viewers.control, "both arms have a device");
    assert.equal(await viewers.canary.page.evaluate(() => window.feedloopDemo.ranker.modelVersion), "2");

    // Simulated devices report thumbs on the version they are served (bits as sent).
    const served = { 1: 0, 2: 0 };
    for (let i = 0; i < 200 && (served[1] < 25 || served[2] < 25); i++) {
      const grant = await json(server.base, "/v1/clients/register", {
        method: "POST",
        headers: { "x-feedloop-deployment-key": DEPLOYMENT_KEY },
      });
      const auth = { authorization: `Bearer ${grant.token}` };
      const { version } = await json(server.base, "/v1/models/current", { headers: auth });
      served[version] += 1;
      const response = await fetch(`${server.base}/v1/feedback`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ modelVersion: version, bit: version === "1" }),
      });
      assert.equal(response.status, 202, await response.text());
      if ((await json(server.base, "/v1/stats")).rollouts[0].status !== "canary") break;
    }

    stats = await json(server.base, "/v1/stats");
    const [rollout] = stats.rollouts;
    assert.equal(rollout.status, "rolled_back", JSON.stringify(rollout));
    assert.equal(rollout.decidedBy, "auto-rollout");
    assert.equal(rollout.evidence.verdict, "regression");
    assert.ok(rollout.evidence.difference[1] < -rollout.evidence.margin);
    assert.equal(stats.versions.find((v) => v.version === "2").flagged, true);

    // The canary device moves back to v1 at its next sync; the control device stays.
    const back = await viewers.canary.sync();
    assert.equal(back.modelVersion, "1", JSON.stringify(back));
    assert.equal(back.modelUpdated, true);
    assert.match(await viewers.canary.page.textContent("#sync-model"), /version 1/);
    assert.equal((await viewers.control.sync()).modelUpdated, false);
    // Without consent nothing at all was sent by either.
    assert.deepEqual([...viewers.canary.sent, ...viewers.control.sent], []);

    // The dashboard: the rollout, its verdict, who decided.
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`dashboard page error: ${e.message}`));
    await page.goto(`${server.base}/dashboard.html`);
    await page.waitForFunction(() => window.feedloopDashboard?.loads > 0, null, { timeout: TIMEOUT });
    const row = await page.textContent('#rollouts tr[data-rollout="2"]');
    assert.match(row, /rolled back/);
    assert.match(row, /regression/);
    assert.match(row, /auto-rollout/);
    const reports = rollout.evidence.canary.reports;
    assert.ok(row.includes(`(${reports})`), `${row} shows the canary's ${reports} reports`);
    // The charts of the latest rollout draw its history from /v1/stats: the interval at the
    // decision, below the dashed rollback boundary at −margin.
    const decided = (await json(server.base, "/v1/stats")).rollouts.at(-1);
    const last = decided.history.at(-1);
    const titles = await page.$$eval("#chart-rollout-difference title", (ts) => ts.map((t) => t.textContent));
    assert.ok(titles.includes(`[${last.difference[0].toFixed(3)}, ${last.difference[1].toFixed(3)}] after ${last.canaryReports} canary reports`), JSON.stringify(titles));
    assert.ok(titles.includes(`rollback boundary −${decided.evidence.margin}`), JSON.stringify(titles));
    assert.ok(last.difference[1] < -decided.evidence.margin, JSON.stringify(last));
    const arms = await page.$$eval("#chart-rollout-rates title", (ts) => ts.map((t) => t.textContent));
    assert.ok(arms.includes(`canary v2: ${last.canaryRate.toFixed(3)} (${last.canaryReports} reports)`), JSON.stringify(arms));
    await context.close();
    assert.deepEqual(problems, []);
  });
});
