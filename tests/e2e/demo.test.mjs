// End-to-end test of the demo page (www/dist, built by `npx webpack --mode production`) in headless
// Chromium: it loads the package's wasm and default model, ranks a sample question and a custom
// one, and must not log any error. Leaves a screenshot in test-results/demo.png.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { launchChromium } from "../../tools/chromium.mjs";

import { serve } from "../../tools/serve-static.mjs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const dist = path.join(root, "www/dist");
const screenshot = path.join(root, "test-results/demo.png");
const TIMEOUT = 60_000;

if (!existsSync(path.join(dist, "index.html"))) {
  throw new Error(
    `www/dist/index.html is missing: build the demo first with \`npx webpack --mode production\` ` +
      `(which needs the package in pkg/, from tools/build-pkg.sh).`,
  );
}

/** The ranking as shown on the page: best first, with each item's original index and score. */
function readRanking(page) {
  return page.$$eval("#results li[data-index]", (items) =>
    items.map((li) => ({
      index: Number(li.dataset.index),
      score: Number(li.dataset.score),
      rank: Number(li.dataset.rank),
      text: li.querySelector(".text")?.textContent ?? "",
      shownScore: li.querySelector(".score")?.textContent ?? "",
      origin: li.querySelector(".origin")?.textContent ?? "",
    })),
  );
}

async function rankCount(page) {
  return page.evaluate(() => window.feedloopDemo.rankCount);
}

async function waitForRankAfter(page, count) {
  await page.waitForFunction(
    (n) => window.feedloopDemo.rankCount > n && document.querySelector("#results").dataset.state === "ready",
    count,
    { timeout: TIMEOUT },
  );
}

describe("feedloop demo page", () => {
  let server;
  let browser;
  let page;
  const problems = []; // page errors, console errors/warnings, failed or 4xx/5xx requests

  before(async () => {
    server = await serve(dist, 0);
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    // The demo asks /healthz whether a feedloop server serves it; this static server answers 404.
    const probe = (url) => new URL(url, server.url).pathname === "/healthz";
    page.on("console", (message) => {
      // Warnings count too: e.g. wasm-bindgen warns when the wasm is not served as application/wasm.
      if (probe(message.location()?.url || "about:blank")) return;
      if (message.type() === "error" || message.type() === "warning") {
        problems.push(`console ${message.type()}: ${message.text()} (${message.location()?.url || "no url"})`);
      }
    });
    page.on("requestfailed", (request) =>
      problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`),
    );
    page.on("response", (response) => {
      if (response.status() >= 400 && !probe(response.url())) problems.push(`HTTP ${response.status()}: ${response.url()}`);
    });
    await page.goto(server.url, { waitUntil: "load" });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test("loads the wasm and the default model and ranks the first sample", async () => {
    await page.waitForFunction(() => window.feedloopDemo !== undefined);
    const outcome = await page.evaluate(() =>
      window.feedloopDemo.ready.then(
        () => "ready",
        (error) => `failed: ${error?.message ?? error}`,
      ),
    );
    assert.equal(outcome, "ready", `the demo did not get ready; problems: ${problems.join("; ")}`);
    await page.waitForSelector('#results[data-state="ready"]');

    const demo = await page.evaluate(() => ({
      loadMs: window.feedloopDemo.loadMs,
      rankMs: window.feedloopDemo.rankMs,
      info: { ...window.feedloopDemo.info },
    }));
    assert.ok(demo.loadMs > 0, "loadMs is recorded");
    assert.ok(demo.rankMs >= 0, "rankMs is recorded");
    assert.ok(demo.info.dimensions > 0 && demo.info.vocabSize > 0, `model info: ${JSON.stringify(demo.info)}`);

    const status = await page.textContent("#status");
    assert.match(status, /Model loaded in [\d.]+ ms/);
    assert.match(status, /ranked \d+ candidates? in [\d.]+ ms/);
    assert.equal(
      (await page.textContent('#model-info dd[data-field="dimensions"]')).trim(),
      String(demo.info.dimensions),
    );
    assert.equal(await page.isHidden("#error"), true, "no error is shown");
    assert.equal(await page.isEnabled("#rank"), true, "the Rank button is enabled");
  });

  test("ranks the password-reset answer first for the password-reset question", async () => {
    const before = await rankCount(page);
    await page.selectOption("#sample", "password-reset");
    await waitForRankAfter(page, before);

    // What the page actually ranked (its own sample set), so the test and the page cannot drift apart.
    const { question, candidates } = await page.evaluate(() => window.feedloopDemo.lastInput);
    assert.equal(question, "How do I reset my password?");

    const ranking = await readRanking(page);
    assert.equal(ranking.length, candidates.length, "every candidate is ranked");
    assert.deepEqual(
      [...ranking.map((r) => r.index)].sort((a, b) => a - b),
      candidates.map((_, i) => i),
      "each original position appears once",
    );
    for (let i = 1; i < ranking.length; i++) {
      assert.ok(ranking[i - 1].score >= ranking[i].score, "scores are sorted best first");
    }
    for (const item of ranking) {
      assert.match(item.shownScore, /^-?\d+\.\d{3}$/, "scores are shown with 3 decimals");
      assert.equal(item.origin, `was #${item.index + 1}`, "the original position is shown");
      assert.equal(item.text, candidates[item.index]);
    }
    assert.match(ranking[0].text, /To reset your password, click 'Forgot password'/, `ranking: ${JSON.stringify(ranking, null, 2)}`);
    assert.match(ranking.at(-1).text, /office is closed on public holidays|profile picture/, "an off-topic answer ranks last");

    const lastRanking = await page.evaluate(() => window.feedloopDemo.lastRanking);
    assert.deepEqual(
      lastRanking.map((r) => r.index),
      ranking.map((r) => r.index),
      "window.feedloopDemo.lastRanking matches the page",
    );
  });

  test("re-ranks a custom question and candidates typed by the user", async () => {
    let before = await rankCount(page);
    await page.fill("#question", "What time does the museum open?");
    await page.fill(
      "#candidates",
      [
        "Bananas are rich in potassium.",
        "To reset your password, click 'Forgot password' on the sign-in page.",
        "The museum opens at nine in the morning and closes at five in the afternoon.",
      ].join("\n"),
    );
    await waitForRankAfter(page, before);
    assert.equal(await page.inputValue("#sample"), "", "editing switches the selector to a custom question");

    let ranking = await readRanking(page);
    assert.equal(ranking.length, 3);
    assert.equal(ranking[0].index, 2, `the museum answer ranks first: ${JSON.stringify(ranking, null, 2)}`);

    // Adding a candidate line updates the ranking; the Rank button ranks right away.
    before = await rankCount(page);
    await page.focus("#candidates");
    await page.evaluate(() => {
      const box = document.querySelector("#candidates");
      box.setSelectionRange(box.value.length, box.value.length);
    });
    await page.keyboard.type("\nMuseum tickets cost ten euros.");
    await page.click("#rank");
    await waitForRankAfter(page, before);
    ranking = await readRanking(page);
    assert.equal(ranking.length, 4, "the added candidate is ranked");
    assert.ok(ranking.some((r) => r.index === 3 && r.text === "Museum tickets cost ten euros."));
    assert.equal(ranking[0].index, 2, "the museum opening-hours answer still ranks first");

    // An empty candidate list is handled without an error.
    before = await rankCount(page);
    await page.fill("#candidates", "");
    await page.waitForSelector('#results[data-state="empty"]');
    assert.equal(await page.isHidden("#error"), true);

    // Back to a sample for the screenshot.
    await page.selectOption("#sample", "password-reset");
    await waitForRankAfter(page, before);
  });

  test("a thumbs-down on the top answer moves it down and shows in the activity panel", async () => {
    const before = await rankCount(page);
    await page.selectOption("#sample", "refund-policy");
    await waitForRankAfter(page, before);
    const ranking = await page.evaluate(() => window.feedloopDemo.lastRanking);
    const top = ranking[0];

    const count = await rankCount(page);
    await page.click('#results li[data-rank="1"] [data-feedloop="thumbs-down"]');
    await waitForRankAfter(page, count);
    const after = await page.evaluate(() => window.feedloopDemo.lastRanking);
    const position = after.findIndex((r) => r.id === top.id) + 1;
    assert.ok(position > 1, `the thumbed-down answer is still on top: ${JSON.stringify(after, null, 2)}`);

    const entry = await page.textContent('#activity li[data-kind="thumbs"]');
    assert.match(entry, new RegExp(`moved #1 → #${position}`), entry);

    // "Why?" explains the new score: the personal adjustment is negative.
    const item = `#results li[data-id="${top.id.replace(/"/g, '\\"')}"]`;
    await page.click(`${item} button[aria-expanded]`);
    const explanation = await page.textContent(`${item} .explanation`);
    assert.match(explanation, /− \d\.\d{3} \(your feedback\)/, explanation);
    assert.match(explanation, /confidence \d+ %/);
  });

  test("dwell and copy on an answer are recorded as implicit feedback", async () => {
    const before = await page.evaluate(() => window.feedloopDemo.feedback.length);
    await page.dispatchEvent('#results li[data-rank="2"] .text', "copy");
    // Let the answers be read for a while, then hide the page (as switching tabs does): the time
    // each answer was on screen is recorded as dwell.
    await page.waitForTimeout(4500);
    await page.evaluate(() => {
      Object.defineProperty(document, "hidden", { value: true, configurable: true });
      document.dispatchEvent(new Event("visibilitychange"));
      delete document.hidden;
      document.dispatchEvent(new Event("visibilitychange"));
    });
    const kinds = await page.evaluate(
      (n) => window.feedloopDemo.feedback.slice(n).map((o) => `${o.kind}:${o.learned}`),
      before,
    );
    assert.ok(kinds.includes("copy:true"), `recorded: ${kinds}`);
    assert.ok(kinds.includes("dwell:true"), `recorded: ${kinds}`);
    assert.ok(await page.isVisible('#activity li[data-kind="dwell"]'));
    assert.ok(await page.isVisible('#activity li[data-kind="copy"]'));
  });

  test("shows the next upload exactly as it would leave the device", async () => {
    await page.click("#inspect-upload");
    const text = await page.textContent("#upload");
    assert.match(text, /^\d+ bytes, sha256 [0-9a-f]{64}/, text);
    assert.match(text, /46 4c 44 50/, "the bytes start with the FLDP magic");
    assert.match(text, /clip C = 1, lattice γ = 0\.01, noise σ = 4, 132 values/);
    assert.match(await page.textContent("#privacy-budget"), /Budget: ε = 8 at δ = 0\.000001 per 30 days/);
  });

  test("emits no page errors, console errors or failed requests; saves a screenshot", async () => {
    await page.evaluate(() => document.activeElement?.blur());
    mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    assert.deepEqual(problems, []);
  });
});
