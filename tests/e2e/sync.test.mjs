// End-to-end federated sync: the real server (`feedloop serve`, embedded SQLite, serving www/dist)
// and Chromium contexts (devices with their own IndexedDB) using the demo page. First, a device
// without the user's consent learns and adopts the global model and sends nothing. Then two devices
// whose users turn sharing on in the privacy panel (the consent, in the ledger). Both give
// feedback and sync; the round closes at its target; version 2 is published and both adopt it. Every
// request body the pages send is captured: the only bodies are privatized updates (FLDP), each one
// recorded in the sending device's ledger, with no candidate text and no feedback event in them.
// Then the upload queue: a failed upload waits in IndexedDB and leaves by sendBeacon when the page is
// hidden, and a thumbs on the top answer is reported once per version as one randomized bit, in the
// ledger first. Withdrawing consent deletes a queued upload and stops all sending. Then the
// dashboard shows the rounds and versions and rolls back with the admin key. Last, an A-or-B
// choice is evaluated against the global model, and its report, when the send fails, is sent again.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { launchChromium } from "../../tools/chromium.mjs";
import { freePort, startServer } from "./server.mjs";

const DEPLOYMENT_KEY = "e2e-deployment-key-0123456789";
const ADMIN_KEY = "e2e-admin-key-0123456789";
const TIMEOUT = 60_000;

async function json(base, route) {
  const response = await fetch(`${base}${route}`);
  assert.ok(response.ok, `${route}: ${response.status}`);
  return response.json();
}

describe("federated sync: two devices, the real server, Chromium", () => {
  let dataDir;
  let server;
  let browser;
  const devices = [];
  const bodies = []; // { device, url, method, body: Buffer }
  const problems = [];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-e2e-"));
    server = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      adminKey: ADMIN_KEY,
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 4, minCohort: 2, targetCount: 2, durationSeconds: 600 },
      // Metric reports at ε = 0.5 (ρ = 0.125 each): with two updates, a thumbs report and a
      // rating, device A stays within its ε = 8 / 30 days budget (at ε = 1 the rating is refused).
      extraArgs: ["--rr-epsilon", "0.5"],
    });
    browser = await launchChromium();
    for (const name of ["A", "B"]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on("pageerror", (e) => problems.push(`${name} page error: ${e.message}`));
      context.on("request", (request) => {
        const body = request.postDataBuffer();
        if (body && body.length > 0) bodies.push({ device: name, url: request.url(), method: request.method(), body });
      });
      // ?sync=manual: only the test's syncs (the page's schedule would race the assertions).
      await page.goto(`${server.base}/?sync=manual&key=${DEPLOYMENT_KEY}`);
      await page.evaluate(() => window.feedloopDemo.ready);
      devices.push({ name, context, page });
    }
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const sync = (page) => page.evaluate(() => window.feedloopDemo.ranker.sync());

  test("without the user's consent a device learns and syncs the model, and sends nothing", { timeout: TIMEOUT }, async () => {
    // A third device of its own (A and B below start from scratch).
    const context = await browser.newContext();
    const page = await context.newPage();
    const sent = [];
    context.on("request", (request) => {
      const body = request.postDataBuffer();
      if (body && body.length > 0) sent.push(request.url());
    });
    page.on("pageerror", (e) => problems.push(`C page error: ${e.message}`));
    await page.goto(`${server.base}/?sync=manual&key=${DEPLOYMENT_KEY}`);
    await page.evaluate(() => window.feedloopDemo.ready);
    assert.equal(await page.isVisible("#sync-panel"), true, "the page found its server");
    assert.equal(await page.getByRole("switch").getAttribute("aria-checked"), "false", "sharing starts off");
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    for (let i = 0; i < 2; i++) {
      const report = await sync(page);
      assert.equal(report.offline, false, JSON.stringify(report));
      assert.equal(report.modelVersion, "1", "the global model is still adopted");
      assert.equal(report.contribution, null);
      assert.match(report.skipped ?? "", /not consented/);
      assert.deepEqual(report.metrics, []);
      await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-up"]'); // under v1 now
    }
    assert.deepEqual(sent, [], "nothing was sent");
    const ledger = await page.evaluate(() => window.feedloopDemo.ranker.privacyReport().ledger.entries);
    assert.deepEqual(ledger, []);
    assert.equal((await json(server.base, "/v1/rounds/current")).received, 0);
    await context.close();
  });

  test("both devices learn, contribute, the round publishes v2 and both adopt it", { timeout: TIMEOUT }, async () => {
    for (const { page } of devices) {
      // The end user turns sharing on in the privacy panel (a switch; the consent goes in the ledger).
      await page.getByRole("switch", { name: "Sharing is off" }).click();
      await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
      assert.equal(await page.evaluate(() => window.feedloopDemo.ranker.consent), true);
      const [first] = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger())).entries;
      assert.equal(first.purpose, "consent granted");
      await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
      await page.click('#results li[data-rank="2"] [data-feedloop="thumbs-up"]');
    }
    const [a, b] = devices;
    const first = await sync(a.page);
    assert.equal(first.offline, false, JSON.stringify(first));
    assert.equal(first.modelVersion, "1");
    assert.equal(first.modelUpdated, true, "the bundled head is replaced by the server's v1");
    assert.ok(first.contribution, `A contributed: ${JSON.stringify(first)}`);
    assert.equal(first.settled.length, 1);
    assert.equal(first.settled[0].delivered, true);
    assert.equal(first.queued, 0);
    // A second sync in the same round sends nothing more.
    const again = await sync(a.page);
    assert.equal(again.contribution, null);
    assert.match(again.skipped, /nothing new was learned|already contributed/);
    assert.equal((await json(server.base, "/v1/rounds/current")).received, 1);

    const second = await sync(b.page);
    assert.ok(second.contribution, JSON.stringify(second));
    assert.equal(second.settled[0]?.delivered, true);
    // B's update was the round's target: it closed and published v2; the next round is open on v2.
    const round1 = await json(server.base, "/v1/rounds/1");
    assert.equal(round1.status, "published");
    assert.equal(round1.cohortSize, 2);
    assert.equal(round1.publishedVersion, "2");
    const models = await json(server.base, "/v1/models");
    assert.equal(models.current, "2");

    for (const { page } of devices) {
      const before = await page.evaluate(() => window.feedloopDemo.ranker.modelVersion);
      const report = await sync(page);
      assert.equal(report.modelVersion, "2");
      assert.equal(report.modelUpdated, before !== "2");
      assert.equal(await page.evaluate(() => window.feedloopDemo.ranker.modelVersion), "2");
      assert.match(await page.textContent("#sync-model"), /version 2/);
    }
    // What was learned now builds on v2.
    assert.equal(await a.page.evaluate(() => window.feedloopDemo.ranker.learningState().baseVersion), "2");

    // What left the devices: only privatized updates, each in its device's ledger.
    const texts = await a.page.evaluate(() => window.feedloopDemo.lastRanking.map((c) => c.text));
    assert.ok(texts.length >= 3);
    assert.equal(bodies.length, 2, bodies.map((b) => b.url).join(", "));
    for (const { device, url, method, body } of bodies) {
      assert.equal(method, "POST");
      assert.match(url, /\/v1\/rounds\/1\/updates$/);
      assert.equal(body.subarray(0, 4).toString("latin1"), "FLDP", "the privatized wire format");
      const asText = body.toString("utf8");
      for (const text of texts) assert.ok(!asText.includes(text.slice(0, 20)), "no candidate text");
      for (const word of ["thumbs", "candidate", "feedback", "dwell"]) assert.ok(!asText.includes(word));
      const page = devices.find((d) => d.name === device).page;
      const ledger = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()));
      const { createHash } = await import("node:crypto");
      const sha = createHash("sha256").update(body).digest("hex");
        const entries = ledger.entries;
      assert.ok(
        entries.some((e) => e.payload_sha256 === sha),
        `${device}'s ledger records the exact bytes it sent`,
      );
    }
    assert.deepEqual(problems, []);
  });

  test("a failed upload waits in IndexedDB and leaves by sendBeacon when the page is left", { timeout: TIMEOUT }, async () => {
    const { page, context } = devices[0];
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    await page.evaluate(() => window.feedloopDemo.ranker.flush());
    await context.route("**/v1/rounds/*/updates", (route) => route.abort("connectionrefused"));
    const failed = await sync(page);
    assert.ok(failed.contribution, JSON.stringify(failed));
    assert.equal(failed.offline, true);
    assert.equal(failed.queued, 1);
    const pending = await page.evaluate(() => window.feedloopDemo.ranker.pendingUploads());
    assert.equal(pending.length, 1);
    assert.equal(pending[0].attempts, 1);
    assert.equal(pending[0].sha256, failed.contribution.sha256);

    // Leaving the page (here: a reload) hides it: the queued upload goes by sendBeacon, with the
    // token in the query (a beacon cannot set headers).
    await context.unroute("**/v1/rounds/*/updates");
    const round = pending[0].roundId;
    const receivedBefore = (await json(server.base, `/v1/rounds/${round}`)).received;
    const beacon = page.waitForRequest((r) => r.url().includes(`/v1/rounds/${round}/updates?access_token=`));
    await page.reload();
    const request = await beacon;
    assert.equal(request.postDataBuffer().subarray(0, 4).toString("latin1"), "FLDP");
    await page.evaluate(() => window.feedloopDemo.ready);
    // The queue survived the reload (IndexedDB), marked as handed to a beacon.
    const restored = await page.evaluate(() => window.feedloopDemo.ranker.pendingUploads());
    assert.equal(restored.length, 1);
    assert.equal(restored[0].sha256, failed.contribution.sha256);
    for (let i = 0; i < 100 && (await json(server.base, `/v1/rounds/${round}`)).received === receivedBefore; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await json(server.base, `/v1/rounds/${round}`)).received, receivedBefore + 1);
    // The next sync confirms it (the server answers "duplicate") and empties the queue.
    const confirm = await sync(page);
    assert.equal(confirm.queued, 0, JSON.stringify(confirm));
    assert.equal(confirm.settled[0]?.delivered, true);
    assert.equal(confirm.settled[0]?.sha256, failed.contribution.sha256);

    // The thumbs-down on the answer v2 ranked first was noted (and saved with the privacy state
    // before the reload); this sync reported it: one randomized bit for v2, in the ledger first.
    // And feedback volume: one kind drawn at random, and whether the user gave it under v2.
    assert.deepEqual(confirm.metrics.map((m) => [m.kind, m.modelVersion, m.delivered]), [["thumbs", "2", true], ["kinds", "2", true]], JSON.stringify(confirm));
    const [metric, kindsMetric] = confirm.metrics;
    const kindsBodies = bodies.filter((b) => b.url.endsWith("/v1/feedback/kinds"));
    assert.equal(kindsBodies.length, 1);
    const kindsSent = JSON.parse(kindsBodies[0].body.toString("utf8"));
    assert.deepEqual(Object.keys(kindsSent).sort(), ["bit", "kind", "modelVersion"], "nothing but the version, the drawn kind and the bit");
    const KINDS = ["thumbs", "stars", "pairwise", "correction", "flag", "click", "dwell", "copy", "regenerate", "skip"];
    assert.ok(KINDS.includes(kindsSent.kind), kindsSent.kind);
    const kindsEntry = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()))
      .entries.find((e) => e.round_id === "kinds@2");
    const { createHash: hash } = await import("node:crypto");
    const kindsSha = hash("sha256").update(Buffer.from([KINDS.indexOf(kindsSent.kind), kindsSent.bit ? 1 : 0])).digest("hex");
    assert.equal(kindsEntry?.payload_sha256, kindsSha, "the ledger records the exact kind and bit sent");
    assert.equal(kindsMetric.sha256, kindsSha);
    assert.equal(metric.kind, "thumbs");
    assert.equal(metric.modelVersion, "2");
    assert.equal(metric.delivered, true, JSON.stringify(metric));
    const reports = bodies.filter((b) => b.url.endsWith("/v1/feedback"));
    assert.equal(reports.length, 1);
    const sent = JSON.parse(reports[0].body.toString("utf8"));
    assert.deepEqual(Object.keys(sent).sort(), ["bit", "modelVersion"], "nothing but the version and the bit");
    assert.equal(sent.modelVersion, "2");
    assert.equal(typeof sent.bit, "boolean");
    const ledger = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()));
    const { createHash } = await import("node:crypto");
    const sha = createHash("sha256").update(Buffer.from([sent.bit ? 1 : 0])).digest("hex");
    const entry = ledger.entries.find((e) => e.round_id === "thumbs@2");
    assert.ok(entry, "the report is in the ledger");
    assert.equal(entry.payload_sha256, sha, "the ledger records the exact bit sent");
    assert.equal(entry.payload_sha256, metric.sha256);
    const stats = await json(server.base, "/v1/stats");
    assert.equal(stats.versions.find((v) => v.version === "2").reports, 1, "the dashboard's rate has a report");
    // A later sync sends no second report for v2.
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-up"]');
    assert.equal((await sync(page)).metrics.length, 0);

    // A star rating under v2: reported once, as one 5-ary randomized rating, in the ledger first.
    await page.click('#results li[data-rank="2"] [data-feedloop="stars-4"]');
    const rated = await sync(page);
    assert.deepEqual(rated.metrics.map((m) => [m.kind, m.modelVersion, m.delivered]), [["stars", "2", true]], JSON.stringify(rated));
    const starBodies = bodies.filter((b) => b.url.endsWith("/v1/feedback/stars"));
    assert.equal(starBodies.length, 1);
    const rating = JSON.parse(starBodies[0].body.toString("utf8"));
    assert.deepEqual(Object.keys(rating).sort(), ["modelVersion", "stars"], "nothing but the version and the rating");
    assert.ok(Number.isInteger(rating.stars) && rating.stars >= 1 && rating.stars <= 5);
    const starEntry = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger()))
      .entries.find((e) => e.round_id === "stars@2");
    const category = Buffer.alloc(4);
    category.writeUInt32LE(rating.stars - 1);
    assert.equal(starEntry.payload_sha256, createHash("sha256").update(category).digest("hex"));
    assert.equal(starEntry.params.mechanism, "categorical_response");
    const starStats = (await json(server.base, "/v1/stats")).versions.find((v) => v.version === "2").stars;
    assert.equal(starStats.reports, 1);
    await page.click('#results li[data-rank="1"] [data-feedloop="stars-2"]');
    assert.equal((await sync(page)).metrics.length, 0, "one rating report per version");
    assert.deepEqual(problems, []);
  });

  test("withdrawing consent deletes the queued upload and nothing more is sent", { timeout: TIMEOUT }, async () => {
    const { page, context } = devices[1];
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    await page.evaluate(() => window.feedloopDemo.ranker.flush());
    await context.route("**/v1/rounds/*/updates", (route) => route.abort("connectionrefused"));
    const failed = await sync(page);
    assert.ok(failed.contribution, JSON.stringify(failed));
    assert.equal(failed.queued, 1);
    await context.unroute("**/v1/rounds/*/updates");
    const sentBefore = bodies.length;
    await page.getByRole("switch", { name: "Sharing is on" }).click();
    await page.getByRole("switch", { name: "Sharing is off" }).waitFor();
    assert.deepEqual(await page.evaluate(() => window.feedloopDemo.ranker.pendingUploads()), []);
    await page.click('#results li[data-rank="2"] [data-feedloop="thumbs-up"]');
    const after = await sync(page);
    assert.equal(after.contribution, null);
    assert.match(after.skipped ?? "", /not consented/);
    assert.deepEqual(after.settled, []);
    assert.equal(bodies.length, sentBefore, "nothing was sent after the withdrawal");
    // Spent stays spent: the withdrawn upload's release is still in the ledger, then the withdrawal.
    const entries = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger())).entries;
    assert.equal(entries.at(-1).purpose, "consent withdrawn");
    // The privacy panel tells the user the same, in words.
    const panel = await page.textContent("#privacy-panel");
    assert.match(panel, /This device shared (once|\d+ times)/);
    assert.match(panel, /sharing turned off/);
    assert.match(panel, /a privatized model improvement \(privacy cost ε = \d/);
    assert.match(panel, /Privacy budget used in the last 30 days: ε = \d/);
    assert.ok(entries.some((e) => e.payload_sha256 === failed.contribution.sha256));
    // After a reload the withdrawal stands (IndexedDB) and the queue stays empty.
    await page.reload();
    await page.evaluate(() => window.feedloopDemo.ready);
    assert.equal(await page.evaluate(() => window.feedloopDemo.ranker.consent), false);
    assert.deepEqual(await page.evaluate(() => window.feedloopDemo.ranker.pendingUploads()), []);
    assert.deepEqual(problems, []);
  });

  test("the dashboard shows rounds, versions and provenance, and rolls back with the admin key", { timeout: TIMEOUT }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`dashboard page error: ${e.message}`));
    await page.goto(`${server.base}/dashboard.html`);
    await page.waitForFunction(() => window.feedloopDashboard?.loads > 0, null, { timeout: TIMEOUT });
    assert.equal(await page.getAttribute("body", "data-state"), "ready");
    assert.match(await page.textContent('#versions tr[data-version="2"]'), /round 1 on v1/);
    // v2's thumbs-up rate and its mean rating, each from one report.
    assert.match(await page.textContent('#versions tr[data-version="2"]'), /\(1\).*\(1\)/);
    assert.match(await page.textContent('#rounds tr[data-round="1"]'), /published/);
    // The charts draw the API's numbers: each round's bar and v2's rate, as their titles say.
    const rounds = (await json(server.base, "/v1/rounds")).rounds;
    const bars = await page.$$eval("#chart-cohort title", (ts) => ts.map((t) => t.textContent));
    for (const r of rounds.filter((r) => r.status !== "open")) {
      assert.ok(bars.includes(`round ${r.roundId}: ${r.cohortSize} devices`), `${JSON.stringify(bars)} has round ${r.roundId}`);
    }
    const v2 = (await json(server.base, "/v1/stats")).versions.find((v) => v.version === "2");
    const rates = await page.$$eval("#chart-rate title", (ts) => ts.map((t) => t.textContent));
    assert.ok(rates.some((t) => t.startsWith(`v2: ${v2.thumbsUpRate.toFixed(3)} `) && t.endsWith(`(${v2.reports} reports)`)), JSON.stringify(rates));
    // Feedback volume per day by kind: the kinds reports of today, as /v1/stats estimates them.
    const volume = (await json(server.base, "/v1/stats")).feedbackVolume;
    assert.ok(volume.length >= 1, "the kinds reports are in today's volume");
    const volumeTitles = await page.$$eval("#chart-volume title", (ts) => ts.map((t) => t.textContent));
    for (const v of volume) {
      const title = `${v.day} ${v.kind}: ≈ ${v.devices.toFixed(0)} devices [${v.ci95[0].toFixed(0)}, ${v.ci95[1].toFixed(0)}] (${v.reports} reports)`;
      assert.ok(volumeTitles.includes(title), `${JSON.stringify(volumeTitles)} has ${title}`);
    }
    await page.fill("#admin-key", ADMIN_KEY);
    page.once("dialog", (d) => d.accept());
    await page.click('#versions tr[data-version="1"] button');
    await page.waitForFunction(() => window.feedloopDashboard.current === "1", null, { timeout: TIMEOUT });
    assert.equal((await json(server.base, "/v1/models")).current, "1");
    const audit = await fetch(`${server.base}/v1/admin/audit`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.ok((await audit.json()).entries.some((e) => e.action === "model.rollback"), "the rollback is in the audit log");
    await context.close();
    assert.deepEqual(problems, []);
  });

  test("an A-or-B choice is evaluated for its version; a report whose send failed is sent again, once", { timeout: TIMEOUT }, async () => {
    const { page, context } = devices[0];
    assert.equal((await sync(page)).modelVersion, "1", "the device follows the rollback");
    // Federated evaluation: did v1's global model already prefer what the user chose?
    await page.evaluate(() => {
      const ranked = window.feedloopDemo.lastRanking;
      window.feedloopDemo.ranker.choose(ranked.at(-1).id, ranked[0].id);
    });
    await context.route("**/v1/feedback/agreement", (route) => route.abort("connectionrefused"));
    const failed = (await sync(page)).metrics.find((m) => m.kind === "agreement");
    assert.ok(failed, "an agreement report was released");
    assert.deepEqual([failed.modelVersion, failed.delivered], ["1", false], JSON.stringify(failed));
    await context.unroute("**/v1/feedback/agreement");
    // After a reload (the undelivered report waits in IndexedDB), the next sync sends it again.
    await page.reload();
    await page.evaluate(() => window.feedloopDemo.ready);
    const retried = (await sync(page)).metrics.find((m) => m.kind === "agreement");
    assert.deepEqual([retried?.modelVersion, retried?.delivered, retried?.sha256], ["1", true, failed.sha256]);
    assert.deepEqual((await sync(page)).metrics, [], "delivered once, not again");
    const entries = JSON.parse(await page.evaluate(() => window.feedloopDemo.ranker.exportLedger())).entries;
    assert.equal(entries.filter((e) => e.round_id === "agreement@1").length, 1, "released and charged once");
    const sent = bodies.filter((b) => b.url.endsWith("/v1/feedback/agreement"));
    assert.equal(sent.length, 2, "the failed attempt and the resend");
    for (const b of sent) assert.deepEqual(Object.keys(JSON.parse(b.body.toString("utf8"))).sort(), ["bit", "modelVersion"]);
    const stats = await json(server.base, "/v1/stats");
    assert.equal(stats.versions.find((v) => v.version === "1").agreement.reports, 1);
    assert.deepEqual(problems, []);
  });
});
