// The client token's lifetime, end to end: a real server issuing short-lived tokens (8 s) and the demo
// page in Chromium. The device must refresh its token before it expires and keep its client id across
// the token's lifetime: registering again would give it a new id and weaken "one update per client per
// round". (The server's `expiresAt` is unix milliseconds; a client reading it as seconds never refreshes
// and gets a 401 once the token has expired.)
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { launchChromium } from "../../tools/chromium.mjs";
import { freePort, startServer } from "./server.mjs";

const DEPLOYMENT_KEY = "e2e-deployment-key-0123456789";
const TTL_SECONDS = 8;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("client token: refreshed before it expires, same client id across its lifetime", () => {
  let dataDir;
  let server;
  let browser;

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "feedloop-token-"));
    server = await startServer({
      dataDir,
      port: await freePort(),
      deploymentKey: DEPLOYMENT_KEY,
      extraArgs: ["--token-ttl-seconds", String(TTL_SECONDS)],
      autoRound: { clipNorm: 1, granularity: 0.001, noiseStddev: 4, minCohort: 5, durationSeconds: 600 },
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test("refresh, not re-registration, and the upload after the first token's expiry is accepted", { timeout: 60_000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    const calls = { register: 0, refresh: 0 };
    context.on("request", (r) => {
      if (r.url().endsWith("/v1/clients/register")) calls.register++;
      if (r.url().endsWith("/v1/clients/refresh")) calls.refresh++;
    });
    await page.goto(`${server.base}/?sync=manual&key=${DEPLOYMENT_KEY}`);
    await page.evaluate(() => window.feedloopDemo.ready);
    await page.getByRole("switch", { name: "Sharing is off" }).click(); // the user consents
    await page.getByRole("switch", { name: "Sharing is on" }).waitFor();
    const sync = () => page.evaluate(() => window.feedloopDemo.ranker.sync());

    const started = Date.now();
    const first = await sync();
    assert.equal(first.offline, false, JSON.stringify(first));
    assert.ok(first.clientId);
    assert.deepEqual(calls, { register: 1, refresh: 0 }, "registered once; a fresh token is not refreshed");

    // Past half of the token's lifetime the device refreshes it (same id, a later expiry).
    await sleep(TTL_SECONDS * 600);
    const second = await sync();
    assert.equal(second.clientId, first.clientId);
    assert.equal(calls.refresh, 1, "refreshed before expiry");

    // Past the first token's expiry: refreshed again, still the same id, and an update is accepted.
    await sleep(Math.max(0, started + TTL_SECONDS * 1000 + 1500 - Date.now()));
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    const third = await sync();
    assert.equal(third.clientId, first.clientId, JSON.stringify(third));
    assert.equal(third.offline, false, JSON.stringify(third));
    assert.ok(third.contribution, JSON.stringify(third));
    assert.equal(third.settled.length, 1, JSON.stringify(third));
    assert.equal(third.settled[0].delivered, true, JSON.stringify(third));
    assert.equal(calls.register, 1, "never registered again");
    assert.ok(calls.refresh >= 2, `refreshed ${calls.refresh} times`);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
