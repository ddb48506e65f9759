// A page on another origin syncs with the server: the demo served by a plain static server on one
// port, `feedloop serve` on another, started with `--cors-origin` for the page's origin. The page
// registers, contributes, the round publishes v2 and the page adopts it. A page from an origin the
// server does not list cannot reach it (the browser blocks the answers): its sync says so (not
// "offline"), fires an `error` event naming `--cors-origin`, and contributes nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium } from "../../tools/chromium.mjs";
import { serve } from "../../tools/serve-static.mjs";
import { freePort, startServer } from "./server.mjs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const DEPLOYMENT_KEY = "e2e-deployment-key-0123456789";

describe("cross-origin sync: the page and the server on two origins", () => {
  let dataDir;
  let server;
  let allowed;
  let other;
  let browser;

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-cors-"));
    allowed = await serve(path.join(root, "www/dist"), 0);
    other = await serve(path.join(root, "www/dist"), 0);
    server = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      extraArgs: ["--cors-origin", new URL(allowed.url).origin],
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 4, minCohort: 1, targetCount: 1, durationSeconds: 600 },
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGTERM");
    await allowed?.close();
    await other?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const open = async (site) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    const query = new URLSearchParams({ sync: "manual", key: DEPLOYMENT_KEY, server: server.base });
    await page.goto(`${site.url}?${query}`);
    await page.evaluate(() => window.feedloopDemo.ready);
    return { context, page, problems };
  };
  const sync = (page) => page.evaluate(() => window.feedloopDemo.ranker.sync());
  const received = async () => (await (await fetch(`${server.base}/v1/rounds/1`)).json()).received;

  test("a listed origin registers, contributes and adopts the published version", { timeout: 60_000 }, async () => {
    const { context, page, problems } = await open(allowed);
    assert.equal(await page.isVisible("#sync-panel"), true, "the page found the server on the other origin");
    await page.getByRole("switch", { name: "Sharing is off" }).click(); // the user consents
    await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    const first = await sync(page);
    assert.equal(first.offline, false, JSON.stringify(first));
    assert.ok(first.clientId, JSON.stringify(first));
    assert.ok(first.contribution, JSON.stringify(first));
    assert.equal(first.settled.length, 1, JSON.stringify(first));
    assert.equal(first.settled[0].delivered, true, JSON.stringify(first));
    // The update was the round's target: v2 is published; the next sync adopts it (the ETag
    // request crosses origins too).
    const round = await (await fetch(`${server.base}/v1/rounds/1`)).json();
    assert.equal(round.status, "published");
    const second = await sync(page);
    assert.equal(second.modelVersion, "2", JSON.stringify(second));
    assert.equal(second.modelUpdated, true);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("an origin the server does not list is told so: a CORS error, an error event, nothing sent", { timeout: 60_000 }, async () => {
    const before = await received();
    const { context, page } = await open(other);
    assert.equal(await page.isVisible("#sync-panel"), false, "the server's answers are blocked");
    const { report, events } = await page.evaluate(async (url) => {
      const { Ranker } = window.feedloopDemo;
      const ranker = await Ranker.create({ storage: "cors-blocked", consent: true, server: { url, deploymentKey: "e2e-deployment-key-0123456789" }, sync: { intervalMs: 0 } });
      const events = [];
      ranker.addEventListener("error", (e) => events.push(e.error.message));
      const report = await ranker.sync();
      return { report, events };
    }, server.base);
    // Not "offline": the server answers, the browser withholds it; the message names the fix.
    assert.equal(report.offline, false, JSON.stringify(report));
    assert.match(report.error, /CORS policy does not allow this page's origin .* --cors-origin /);
    assert.equal(report.contribution, null);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.match(events[0], /--cors-origin/);
    assert.equal(await received(), before);
    await context.close();
  });
});
