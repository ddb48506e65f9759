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
  assert.throws(() => ranker.rank("q", ["ok", 42]), { message: /candidates\[1\] must be a string, got number/ });
  assert.throws(() => ranker.rank("q", "not an array"), { message: /candidates must be an array of strings, got string/ });
  assert.throws(() => ranker.rank(undefined, ["a"]), { message: /context must be a string, got undefined/ });
  await rejectsWith(Ranker.create({ model: 12 }), /options\.model must be/);
  assert.throws(() => new Ranker({}), /Ranker\.create/);
});
