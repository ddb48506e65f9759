// The built npm package (pkg/), imported the way a developer imports it, run by node:test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";

import { Ranker } from "../../pkg/index.js";

const parity = JSON.parse(await readFile(new URL("../fixtures/parity.json", import.meta.url), "utf8"));
const modelUrl = new URL("../../pkg/feedloop-default.onnx", import.meta.url);

test("default model loads with no options and ranks by relevance", async () => {
  const ranker = await Ranker.create();
  const ranking = ranker.rank("How do I reset my password?", [
    "The museum opens at nine and closes at five.",
    "To reset your password, click 'Forgot password' on the sign-in page and follow the email link.",
    "Bananas are rich in potassium.",
  ]);
  assert.equal(ranking.length, 3);
  assert.equal(ranking[0].index, 1);
  assert.ok(ranking[0].score >= ranking[1].score && ranking[1].score >= ranking[2].score);
  assert.equal(ranker.info.dimensions, 64);
  assert.equal(ranker.info.maxTokens, 512);
});

test("scores match onnxruntime to 1e-5", async () => {
  const ranker = await Ranker.create({ model: await readFile(modelUrl) });
  let worst = 0;
  for (const group of parity.groups) {
    const scores = ranker.score(group.context, group.candidates);
    group.scores.forEach((expected, i) => (worst = Math.max(worst, Math.abs(scores[i] - expected))));
    const embeddings = ranker.embed(group.candidates);
    group.embeddings.forEach((row, i) =>
      row.forEach((expected, j) => (worst = Math.max(worst, Math.abs(embeddings[i][j] - expected)))),
    );
    assert.deepEqual(Array.from(ranker.tokenize(group.context)), group.context_ids);
  }
  assert.ok(worst <= 1e-5, `largest difference ${worst}`);
});

test("empty candidate list ranks to an empty list", async () => {
  const ranker = await Ranker.create();
  assert.deepEqual(ranker.rank("anything", []), []);
});

async function rejectsWith(promiseOrFn, pattern) {
  await assert.rejects(
    async () => (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn),
    (err) => {
      assert.ok(err instanceof Error, `not an Error: ${err}`);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

test("malformed ONNX bytes are a JS Error", async () => {
  await rejectsWith(Ranker.create({ model: new Uint8Array([1, 2, 3, 4, 5]) }), /malformed ONNX model/);
});

test("a model missing an output is a JS Error naming it", async () => {
  // Rename the graph output `score` (ValueInfoProto.name, field 1) in the protobuf: same length, so the file
  // still parses, but the contract's output is gone.
  const bytes = new Uint8Array(await readFile(modelUrl));
  const text = new TextDecoder("latin1").decode(bytes);
  const outputs = [...text.matchAll(/\x0a\x05score/g)];
  assert.ok(outputs.length > 0);
  const patched = bytes.slice();
  for (const m of outputs) patched.set(new TextEncoder().encode("\x0a\x05scorX"), m.index);
  await rejectsWith(Ranker.create({ model: patched }), /output `score`/);
});

test("bad arguments are JS Errors with clear messages", async () => {
  const ranker = await Ranker.create();
  assert.throws(() => ranker.rank("q", ["ok", 42]), { message: /candidates\[1\] must be a string or \{ id, text \}, got number/ });
  assert.throws(() => ranker.rank("q", "not an array"), { message: /candidates must be an array of strings or \{ id, text \} objects, got string/ });
  assert.throws(() => ranker.rank(undefined, ["a"]), { message: /context must be a string, got undefined/ });
  await rejectsWith(Ranker.create({ model: 12 }), /options\.model must be/);
  assert.throws(() => new Ranker({}), /Ranker\.create/);
});

const ANSWERS = [
  { id: "reset", text: "To reset your password, click 'Forgot password' on the sign-in page." },
  { id: "rules", text: "Passwords must be at least 12 characters long." },
  { id: "museum", text: "The museum opens at nine." },
];
const QUESTION = "How do I reset my password?";

test("feedback helpers learn at once, emit events and explain the change", async () => {
  const ranker = await Ranker.create();
  assert.deepEqual(ranker.storage, { name: null, persistent: false, lastError: null }, "Node has no IndexedDB");
  const seen = [];
  ranker.addEventListener("feedback", (e) => seen.push(e.detail.kind));
  assert.equal(ranker.rank(QUESTION, ANSWERS)[0].id, "reset");

  const outcome = ranker.thumbs("reset", false);
  assert.equal(outcome.learned, true);
  assert.ok(outcome.scoreAfter < outcome.scoreBefore);
  assert.notEqual(ranker.rank(QUESTION, ANSWERS)[0].id, "reset", "a thumbs-down on the top answer moves it down");

  ranker.rate("rules", 5);
  ranker.choose("rules", "museum");
  ranker.correct("museum", "The museum opens at nine; it has no password.");
  ranker.flag("museum", "off-topic");
  assert.deepEqual(seen, ["thumbs", "stars", "pairwise", "correction", "flag"]);
  assert.equal(ranker.activity().length, 5);
  assert.equal(ranker.learningState().exampleCount, 5);
  assert.equal(ranker.learningState().delta.length, ranker.info.headParameters);

  const why = ranker.explain("reset");
  assert.ok(Math.abs(why.relevance + why.globalPreference + why.personalAdjustment - why.score) < 1e-5);
  assert.ok(why.personalAdjustment < 0 && why.confidence > 0);

  ranker.resetLearning();
  assert.equal(ranker.rank(QUESTION, ANSWERS)[0].id, "reset", "reset forgets what was learned");
});

test("malformed feedback throws Errors that name the problem", async () => {
  const ranker = await Ranker.create();
  ranker.rank(QUESTION, ANSWERS);
  for (const [event, pattern] of [
    [{ kind: "love", candidate: "reset" }, /unknown feedback kind "love"/],
    [{ kind: "stars", candidate: "reset", stars: 0 }, /1 to 5/],
    [{ kind: "pairwise", winner: "reset", loser: "reset" }, /two different candidates/],
    [{ kind: "thumbs", candidate: "someone-else", up: true }, /unknown candidate "someone-else"/],
    [{ kind: "copy", candidate: "reset", timestamp: Date.now() + 86_400_000 }, /in the future/],
    [{ kind: "flag", candidate: "reset", category: "boring" }, /wrong, harmful, off-topic/],
    [null, /must be an object/],
  ]) {
    assert.throws(() => ranker.recordFeedback(event), (err) => err instanceof Error && pattern.test(err.message));
  }
  assert.equal(ranker.activity().length, 0, "rejected events are not recorded");
  await rejectsWith(() => Ranker.create({ weights: { click: -1 } }), /weight for click must be between 0 and 4/);
  await rejectsWith(() => Ranker.create({ learning: { learningRate: 0 } }), /learningRate/);
  await rejectsWith(() => Ranker.create({ storgae: "x" }), /unknown option `storgae`/);
});

test("an explicit storage name without IndexedDB reports an error event and keeps working", async () => {
  const ranker = await Ranker.create({ storage: "feedloop-node" });
  const error = await new Promise((resolve) => ranker.addEventListener("error", (e) => resolve(e.error)));
  assert.ok(error instanceof Error);
  assert.match(error.message, /storage: .*no indexedDB/);
  ranker.rank(QUESTION, ANSWERS);
  assert.equal(ranker.thumbs("rules", true).learned, true, "learning continues in memory");
});

const ROUND = { roundId: "r1", modelVersion: "bundled", clipNorm: 1, granularity: 0.01, noiseStddev: 4 };

test("privacy: the report, the inspected upload and the refusals", async () => {
  const ranker = await Ranker.create({ privacy: { epsilon: 4, delta: 1e-6, windowDays: 7, maxRhoPerRelease: 0.25 } });
  const report = ranker.privacyReport();
  assert.equal(report.policy.epsilon, 4);
  assert.equal(report.policy.windowDays, 7);
  assert.equal(report.policy.metricsShare, 1, "metric reports may use the whole budget by default");
  assert.equal(report.spent.releases, 0);
  const shared = await Ranker.create({ storage: false, privacy: { metricsShare: 0.2 } });
  assert.equal(shared.privacyReport().policy.metricsShare, 0.2);
  await assert.rejects(Ranker.create({ storage: false, privacy: { metricsShare: 0 } }), /metrics_share.*must be > 0 and <= 1/);
  assert.ok(report.remaining.rho > 0 && report.remaining.rho === report.policy.totalRho);
  assert.equal(JSON.parse(ranker.exportLedger()).format, "feedloop-ledger");

  ranker.rank(QUESTION, ANSWERS);
  ranker.thumbs("reset", false);
  const upload = ranker.inspectNextUpload(ROUND);
  assert.ok(upload.bytes instanceof Uint8Array);
  assert.equal(new TextDecoder().decode(upload.bytes.slice(0, 4)), "FLDP");
  assert.equal(upload.decoded.values.length, ranker.info.headParameters);
  assert.ok(upload.decoded.values.every(Number.isInteger), "lattice values are integers");
  assert.equal(upload.rho, 0.125);
  assert.match(upload.sha256, /^[0-9a-f]{64}$/);

  assert.throws(() => ranker.inspectNextUpload({ ...ROUND, noiseStddev: 1 }), /privacy:/);
  assert.throws(() => ranker.inspectNextUpload({ ...ROUND, modelVersion: "v7" }), /update the model first/);
  await rejectsWith(() => ranker.releaseNextUpload(ROUND), /needs persistent storage/);
  await rejectsWith(() => Ranker.create({ privacy: { epsilon: -1 } }), /invalid privacy policy/);
});

test("diagnostics: exact discrete Gaussian draws have the right spread", async () => {
  const { diagnostics } = await import("../../pkg/index.js");
  const draws = await diagnostics.sampleDiscreteGaussian(10, 100_000);
  assert.equal(draws.length, 100_000);
  assert.ok(draws.every(Number.isInteger));
  const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
  const sd = Math.sqrt(draws.reduce((a, b) => a + (b - mean) ** 2, 0) / draws.length);
  assert.ok(Math.abs(mean) < 0.2, `mean ${mean}`);
  assert.ok(Math.abs(sd - 10) < 0.2, `sd ${sd}`);
  assert.ok((await diagnostics.privatizeBenchmarkUpdate(1000)) > 1000);
  // A sealed report at d = 131: two HPKE ciphertexts of Prio3 shares (15,581 bytes natively).
  const sealed = await diagnostics.sealBenchmarkReport(131);
  assert.ok(sealed > 10_000 && sealed < 30_000, `${sealed} bytes`);
});

test("sync options are checked up front and need persistent storage", async () => {
  const server = { url: "http://127.0.0.1:9", deploymentKey: "site-key-0123456789" };
  await assert.rejects(Ranker.create({ server, storage: false }), /needs persistent storage/);
  await assert.rejects(Ranker.create({ sync: { every: 5 } }), /unknown sync option `every`/);
  await assert.rejects(Ranker.create({ sync: { intervalMs: 10 } }), /at least 1000/);
  const ranker = await Ranker.create({ storage: false });
  assert.equal(ranker.modelVersion, "bundled");
  assert.deepEqual(ranker.pendingUploads(), []);
  await assert.rejects(ranker.sync(), /sync needs Ranker.create\(\{ server/);
});

test("catalog scoring: no WebGPU in Node → the CPU path, the ranker's own scores, clear errors", async () => {
  const ranker = await Ranker.create({ storage: false });
  assert.equal(ranker.gpuAdapter, null);
  const texts = parity.groups.flatMap((g) => g.candidates);
  const context = parity.groups[0].context;
  const catalog = ranker.embedCatalog(texts);
  assert.equal(catalog.dimensions, 64);
  assert.equal(catalog.vectors.length, texts.length * 64);
  assert.equal(catalog.tokenCounts.length, texts.length);
  assert.ok(catalog.tokenIds instanceof Uint32Array);
  assert.equal(catalog.tokenIds.length, catalog.tokenCounts.reduce((a, b) => a + b, 0));
  // Plain `score` runs through the same personal head, so the catalog scores equal it.
  const scores = await ranker.scoreCatalog(context, catalog);
  const reference = ranker.score(context, texts);
  scores.forEach((s, i) => assert.ok(Math.abs(s - reference[i]) <= 1e-5 * Math.max(1, Math.abs(reference[i])), `${i}: ${s} vs ${reference[i]}`));
  assert.equal(ranker.backend, "cpu");
  // "always" without an adapter is still the CPU, never an error.
  assert.equal(await ranker.setGpu("always"), null);
  assert.deepEqual(await ranker.scoreCatalog(context, catalog), scores);
  assert.equal(ranker.backend, "cpu");

  await assert.rejects(() => ranker.scoreCatalog(context, { vectors: [1, 2], tokenCounts: new Uint32Array(1) }), /scoreCatalog needs a catalog/);
  await assert.rejects(
    () => ranker.scoreCatalog(context, { vectors: catalog.vectors.subarray(1), tokenCounts: catalog.tokenCounts }),
    (e) => e instanceof Error && /needs \d+ vector values/.test(e.message),
  );
  const nan = { vectors: catalog.vectors.slice(), tokenCounts: catalog.tokenCounts };
  nan.vectors[70] = Number.NaN;
  await assert.rejects(() => ranker.scoreCatalog(context, nan), /value 70 \(entry 1\) is not a finite number/);
  // The default model's lexical term needs the token ids: a catalog without them says what to do.
  await assert.rejects(
    () => ranker.scoreCatalog(context, { vectors: catalog.vectors, tokenCounts: catalog.tokenCounts }),
    (e) => e instanceof Error && /embed it again/.test(e.message),
  );
  await assert.rejects(() => ranker.setGpu("fast"), /gpu must be "auto", "always" or "off"/);
  await assert.rejects(() => Ranker.create({ storage: false, gpu: "yes" }), /options.gpu must be/);
});

test("scoreTokenIds: the global head's scores from token ids, clear errors", async () => {
  const ranker = await Ranker.create({ storage: false });
  const texts = parity.groups.flatMap((g) => g.candidates);
  const context = parity.groups[0].context;
  const contextIds = ranker.tokenize(context);
  const candidateIds = texts.map((t) => ranker.tokenize(t));
  candidateIds.push(new Uint32Array(0)); // an empty text is a valid row
  const scores = ranker.scoreTokenIds(contextIds, candidateIds);
  // Before any feedback the personal head is the global head, so `score` must agree.
  const reference = ranker.score(context, [...texts, ""]);
  assert.equal(scores.length, texts.length + 1);
  scores.forEach((s, i) => assert.ok(Math.abs(s - reference[i]) <= 1e-6 * Math.max(1, Math.abs(reference[i])), `${i}: ${s} vs ${reference[i]}`));
  assert.equal(ranker.scoreTokenIds(contextIds, []).length, 0);

  assert.throws(() => ranker.scoreTokenIds([1, 2], candidateIds), (e) => e instanceof Error && /contextIds must be a Uint32Array, got an array/.test(e.message));
  assert.throws(() => ranker.scoreTokenIds(contextIds, "ids"), /candidateIds must be an array of Uint32Array, got string/);
  assert.throws(() => ranker.scoreTokenIds(contextIds, [candidateIds[0], [5]]), /candidateIds\[1\] must be a Uint32Array/);
  const outside = Uint32Array.of(ranker.info.vocabSize);
  assert.throws(() => ranker.scoreTokenIds(contextIds, [outside]), (e) => e instanceof Error && /outside the vocabulary/.test(e.message));
});

test("candidate lists cross as joined strings: emoji, accents and empty texts score as they do alone", async () => {
  const ranker = await Ranker.create({ storage: false });
  const context = "How do I reset my password?";
  const texts = ["", "😀 reset it 👍🏽 now", "naïve café: mot de passe oublié", "Forgot password? Click the link.", "中文 密码", "\uD83D lone surrogate"];
  const together = ranker.score(context, texts);
  texts.forEach((t, i) => assert.equal(together[i], ranker.score(context, [t])[0], `text ${i}`));
  const ranked = ranker.rank(context, texts.map((text, i) => ({ id: `id-${i}-ü😀`, text })));
  assert.deepEqual(new Set(ranked.map((r) => r.id)), new Set(texts.map((_, i) => `id-${i}-ü😀`)));
  // Two lone halves of one surrogate pair on either side of a boundary cannot be told apart from a
  // real pair once joined: refused with a message rather than mis-split.
  assert.throws(() => ranker.score(context, ["a\uD83D", "\uDE00b"]), (e) => e instanceof Error && /lone UTF-16 surrogate/.test(e.message));
});

test("the package carries its license and attribution, exports its wasm and names its Node", async () => {
  const pkg = new URL("../../pkg/", import.meta.url);
  const manifest = JSON.parse(await readFile(new URL("package.json", pkg), "utf8"));
  assert.equal(manifest.license, "Apache-2.0");
  assert.match(await readFile(new URL("LICENSE", pkg), "utf8"), /Apache License\s+Version 2\.0/);
  assert.match(await readFile(new URL("NOTICE", pkg), "utf8"), /all-MiniLM-L6-v2/);
  assert.ok(manifest.files.includes("LICENSE") && manifest.files.includes("NOTICE"));
  assert.equal(manifest.exports["./feedloop_wasm_bg.wasm"], "./feedloop_wasm_bg.wasm");
  // process.getBuiltinModule, how the package reads its files in Node without an import bundlers see.
  assert.equal(manifest.engines.node, ">=20.16");
  // The exported wasm resolves through the exports map and is wasm (the magic number).
  const { createRequire } = await import("node:module");
  const resolved = createRequire(new URL("package.json", pkg)).resolve("feedloop/feedloop_wasm_bg.wasm");
  const bytes = await readFile(resolved);
  assert.deepEqual([...bytes.subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d]);
});

test("consent: none by default; the option and setConsent record it in the ledger; bad values are TypeErrors", async () => {
  const ranker = await Ranker.create({ storage: false });
  assert.equal(ranker.consent, false);
  assert.deepEqual(ranker.privacyReport().consent, { granted: false, changedAtMs: null });
  const events = [];
  ranker.addEventListener("consent", (e) => events.push(e.detail.granted));
  assert.equal(await ranker.setConsent(true), true);
  assert.equal(await ranker.setConsent(true), false, "no change, no second entry");
  assert.equal(ranker.consent, true);
  const report = ranker.privacyReport();
  assert.equal(report.consent.granted, true);
  assert.equal(typeof report.consent.changedAtMs, "number");
  assert.deepEqual(report.ledger.entries.map((e) => [e.purpose, e.params.mechanism, e.rho]), [["consent granted", "consent", 0]]);
  assert.equal(report.spent.releases, 0, "a consent change is not a release");
  assert.equal(await ranker.setConsent(false), true);
  assert.deepEqual(events, [true, false]);
  await rejectsWith(() => ranker.setConsent(1), /setConsent\(granted\) takes true or false, got number/);
  await rejectsWith(Ranker.create({ storage: false, consent: "yes" }), /options\.consent must be true or false, got string/);
  const consenting = await Ranker.create({ storage: false, consent: true });
  assert.equal(consenting.consent, true);
});
