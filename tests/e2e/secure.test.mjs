// End-to-end secure aggregation: two real aggregator processes — `feedloop serve --role helper` (its
// own SQLite file and keys) and the leader (`feedloop serve --helper-url`, serving the demo page,
// with an automatic secure round) — and Chromium devices. A device whose policy does not pin the
// helper joins no secure round. Two devices that pin it (the demo's ?helper=) and whose users turn
// sharing on contribute; the round closes at its target, the helper releases its noisy share once,
// version 2 is published and both adopt it. Every request body the pages send is captured: the
// only update bodies are sealed reports (HPKE ciphertexts and the Prio3 public share), recorded in
// the sender's ledger as secure aggregation with the helper's fingerprint — never the privatized
// update format, a candidate's text or a feedback event. The leader aggregates metrics with the
// helper too (`--secure-metrics`): the pinned devices' thumbs reports are sealed Prio3Histogram
// reports, released as one noisy batch of 2 — the dashboard shows them as sealed.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { launchChromium } from "../../tools/chromium.mjs";
import { freePort, startHelper, startServer } from "./server.mjs";

const DEPLOYMENT_KEY = "e2e-deployment-key-0123456789";
const ADMIN_KEY = "e2e-admin-key-0123456789";
const LEADER_TOKEN = "e2e-leader-token-0123456789";
const TIMEOUT = 60_000;

async function json(base, route) {
  const response = await fetch(`${base}${route}`);
  assert.ok(response.ok, `${route}: ${response.status}`);
  return response.json();
}

describe("secure aggregation: a leader and a helper process, two devices, Chromium", () => {
  let dataDir;
  let helper;
  let leader;
  let browser;
  let fingerprint;
  const bodies = []; // { device, url, body: Buffer }
  const problems = [];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-e2e-secure-"));
    // The helper's own policy: σ ≥ 2·C on every sum (ρ = 0.5 per device and round), batches ≥ 2.
    helper = await startHelper({
      dataDir,
      port: await freePort(),
      leaderToken: LEADER_TOKEN,
      extraArgs: ["--helper-noise-multiplier", "2", "--helper-min-reports", "2"],
    });
    fingerprint = (await json(helper.base, "/v1/helper")).fingerprint;
    leader = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      adminKey: ADMIN_KEY,
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 2, minCohort: 2, targetCount: 2,
        durationSeconds: 600, aggregation: "secure" },
      // σ = 6 per bucket: ρ = 1/36 per sealed report, which fits the default budget (ε = 8,
      // total ρ ≈ 1.05) after the two rounds' 0.5 each.
      extraArgs: ["--helper-url", helper.base, "--helper-token", LEADER_TOKEN,
        "--secure-metrics", "--metric-batch", "2", "--metric-noise", "6"],
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    leader?.child.kill("SIGTERM");
    helper?.child.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  async function device(name, query) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`${name} page error: ${e.message}`));
    context.on("request", (request) => {
      const body = request.postDataBuffer();
      if (body && body.length > 0) bodies.push({ device: name, url: request.url(), body });
    });
    await page.goto(`${leader.base}/?sync=manual&key=${DEPLOYMENT_KEY}${query}`);
    await page.evaluate(() => window.feedloopDemo.ready);
    await page.getByRole("switch", { name: "Sharing is off" }).click();
    await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    await page.click('#results li[data-rank="2"] [data-feedloop="thumbs-up"]');
    return { name, context, page };
  }

  const sync = (page) => page.evaluate(() => window.feedloopDemo.ranker.sync());

  test("the round is secure, names its helper, and a device that pins another joins nothing", { timeout: TIMEOUT }, async () => {
    const round = await json(leader.base, "/v1/rounds/current");
    assert.equal(round.aggregation, "secure");
    assert.equal(round.secure.helperFingerprint, fingerprint);
    assert.equal(round.noiseStddev, 2, "the helper's σ = z·C");
    assert.equal(round.minCohort, 2);

    const stranger = await device("stranger", "");
    const report = await sync(stranger.page);
    assert.equal(report.contribution, null, JSON.stringify(report));
    assert.match(report.skipped ?? "", /not one this device's policy pins/);
    // Its policy's minimum batch refuses a helper that releases batches of 2.
    const cautious = await device("cautious", `&helper=${encodeURIComponent(fingerprint)}&minBatch=50`);
    const refused = await sync(cautious.page);
    assert.equal(refused.contribution, null);
    assert.match(refused.skipped ?? "", /needs at least 50/);
    assert.equal(bodies.filter((b) => b.url.includes("/updates")).length, 0, "nothing was sent");
    assert.equal((await json(leader.base, "/v1/rounds/current")).received, 0);
    await stranger.context.close();
    await cautious.context.close();
  });

  test("two pinned devices contribute sealed reports; the helper's release publishes v2", { timeout: TIMEOUT }, async () => {
    const query = `&helper=${encodeURIComponent(fingerprint)}&minBatch=2`;
    const devices = [await device("A", query), await device("B", query)];
    const round = await json(leader.base, "/v1/rounds/current");
    // The inspector shows what would leave: a sealed report of the clipped, rounded update.
    const inspected = await devices[0].page.evaluate((round) => {
      const ranker = window.feedloopDemo.ranker;
      const u = ranker.inspectNextUpload({ ...round, modelVersion: ranker.modelVersion });
      return { aggregation: u.decoded.aggregation, head: u.bytes[0], bytes: u.bytes.length, rho: u.rho };
    }, { roundId: round.roundId, clipNorm: round.clipNorm, granularity: round.granularity,
      noiseStddev: round.noiseStddev, secure: round.secure });
    assert.deepEqual({ ...inspected, bytes: inspected.bytes > 10_000 },
      { aggregation: "secure", head: 1, bytes: true, rho: 0.5 });
    for (const { page } of devices) {
      const report = await sync(page);
      assert.equal(report.offline, false, JSON.stringify(report));
      assert.ok(report.contribution, JSON.stringify(report));
      assert.equal(report.settled[0]?.delivered, true, JSON.stringify(report));
    }
    const closed = await json(leader.base, `/v1/rounds/${round.roundId}`);
    assert.equal(closed.status, "published", JSON.stringify(closed));
    assert.equal(closed.publishedVersion, "2");
    assert.match(helper.log(), /helper: released a batch/);
    for (const { page } of devices) {
      const report = await sync(page);
      assert.equal(report.modelVersion, "2");
    }
    // A thumbs-up on v2's top answer: sealed to the two aggregators at the next sync (ρ = 1/36).
    // The feedback-volume report that follows it (randomized, ρ = 0.5) no longer fits these
    // devices' budgets after two rounds, and is refused on the device: nothing of it leaves.
    for (const { page } of devices) {
      await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-up"]');
      const report = await sync(page);
      assert.equal(report.offline, false, JSON.stringify(report));
      const thumbs = report.metrics.find((m) => m.kind === "thumbs");
      assert.deepEqual([thumbs?.modelVersion, thumbs?.delivered], ["2", true], JSON.stringify(report));
      assert.match(report.error ?? "", /would spend/, JSON.stringify(report));
    }

    // What left the devices: sealed reports only, each in its sender's ledger.
    const texts = await devices[0].page.evaluate(() => window.feedloopDemo.lastRanking.map((c) => c.text));
    // Round 1's two (the thumbs sync above also contributed to the next secure round, on v2).
    const updates = bodies.filter((b) => b.url.includes(`/rounds/${round.roundId}/updates`));
    assert.equal(updates.length, 2, updates.map((b) => b.url).join(", "));
    for (const { device: name, url, body } of updates) {
      assert.match(url, new RegExp(`/v1/rounds/${round.roundId}/updates$`));
      assert.notEqual(body.subarray(0, 4).toString("latin1"), "FLDP", "not a privatized update");
      assert.equal(body[0], 1, "a feedloop-secagg report (version 1)");
      assert.ok(body.length > 10_000, `two sealed Prio3 shares (${body.length} bytes)`);
      const asText = body.toString("utf8");
      for (const text of texts) assert.ok(!asText.includes(text.slice(0, 20)), "no candidate text");
      for (const word of ["thumbs", "candidate", "feedback", "dwell"]) assert.ok(!asText.includes(word));
      const { page } = devices.find((d) => d.name === name);
      const ledger = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()));
      const sha = createHash("sha256").update(body).digest("hex");
      const entry = ledger.entries.find((e) => e.payload_sha256 === sha);
      assert.ok(entry, `${name}'s ledger records the exact bytes it sent`);
      assert.equal(entry.params.mechanism, "secure_aggregation");
      assert.equal(entry.params.helper_fingerprint, fingerprint);
      assert.equal(entry.params.min_reports, 2);
      assert.match(entry.params.trust, /do not collude/);
    }
    // The thumbs reports are sealed: {modelVersion, metric, report} and the report's bytes are in
    // the sender's ledger as a secure histogram release; neither aggregator can read one alone.
    const sealedBodies = bodies.filter((b) => b.url.endsWith("/v1/feedback/sealed"));
    assert.equal(sealedBodies.length, 2, bodies.map((b) => b.url).join(", "));
    for (const { device: name, body } of sealedBodies) {
      const report = JSON.parse(body.toString("utf8"));
      assert.deepEqual(Object.keys(report).sort(), ["metric", "modelVersion", "report"]);
      assert.equal(report.metric, "thumbs");
      const bytes = Buffer.from(report.report, "base64");
      assert.equal(bytes[0], 1, "a feedloop-secagg report");
      const { page } = devices.find((d) => d.name === name);
      const ledger = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()));
      const sha = createHash("sha256").update(bytes).digest("hex");
      const entry = ledger.entries.find((e) => e.payload_sha256 === sha);
      assert.ok(entry, `${name}'s ledger records the sealed bytes`);
      assert.deepEqual([entry.params.mechanism, entry.params.buckets, entry.params.helper_fingerprint],
        ["secure_histogram", 2, fingerprint]);
      assert.equal(entry.round_id, "thumbs@2");
    }
    assert.match(helper.log(), /helper: released a metric batch/);
    const stats = await json(leader.base, "/v1/stats");
    assert.equal(stats.secureMetrics.helperFingerprint, fingerprint);
    const v2 = stats.versions.find((v) => v.version === "2");
    assert.deepEqual([v2.sealed.thumbs.reports, v2.sealed.thumbs.batches], [2, 1], JSON.stringify(v2));
    assert.equal(typeof v2.thumbsUpRate, "number");
    // Every other body a page sent is a randomized metric report (JSON) or nothing.
    for (const { url, body } of bodies.filter((b) => !b.url.includes("/updates") && !b.url.endsWith("/sealed"))) {
      assert.match(url, /\/v1\/feedback/, url);
      assert.ok(body.length < 200);
    }
    assert.deepEqual(problems, []);
  });

  test("the dashboard shows the round's mode, its helper, the minimum batch and σ", { timeout: TIMEOUT }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`dashboard page error: ${e.message}`));
    await page.goto(`${leader.base}/dashboard.html`);
    await page.waitForFunction(() => window.feedloopDashboard?.loads > 0, null, { timeout: TIMEOUT });
    const row = await page.textContent('#rounds tr[data-round="1"]');
    const short = fingerprint.replace(/^sha256:/, "").slice(0, 12);
    assert.match(row, new RegExp(`secure: helper ${short}…, ≥ 2 reports, σ = 2 on the sum`));
    assert.match(row, /published/);
    const v2 = await page.textContent('#versions tr[data-version="2"]');
    assert.match(v2, /0 \+ 2 sealed/, v2);
    await context.close();
    assert.deepEqual(problems, []);
  });
});
