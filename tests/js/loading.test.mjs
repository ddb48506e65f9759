// How the package finds, fetches and checks its two files (pkg/load.js): the `wasm` option in each
// of its forms, a wasm URL that answers with HTML, one download shared by concurrent creates, and
// the errors. The wasm module is initialized once per process, so each case runs in its own Node.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);
const pkg = new URL("../../pkg/index.js", import.meta.url).href;
const wasmFile = new URL("../../pkg/feedloop_wasm_bg.wasm", import.meta.url);
const modelFile = new URL("../../pkg/feedloop-default.onnx", import.meta.url);

let server;
let base;
const requests = [];

before(async () => {
  const wasm = await readFile(wasmFile);
  const model = await readFile(modelFile);
  const html = "<!doctype html><html><body>index.html, as a dev server's fallback</body></html>";
  server = createServer((req, res) => {
    requests.push(req.url);
    const routes = {
      "/feedloop_wasm_bg.wasm": ["application/wasm", wasm],
      "/octet/feedloop_wasm_bg.wasm": ["application/octet-stream", wasm],
      "/model.onnx": ["application/octet-stream", model],
      "/fallback/feedloop_wasm_bg.wasm": ["text/html", html],
      "/fallback/model.onnx": ["text/html", html],
    };
    const route = routes[req.url];
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": route[0] }).end(route[1]);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => server?.close());

// Runs `body` (an async function's body, with `Ranker`, `base` and `wasmFile` in scope) in a fresh
// Node; resolves with what it returned.
async function fresh(body) {
  const script = `
    import { Ranker } from ${JSON.stringify(pkg)};
    const base = ${JSON.stringify(base)};
    const wasmFile = new URL(${JSON.stringify(wasmFile.href)});
    const result = await (async () => { ${body} })();
    console.log(JSON.stringify(result));`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script]);
  return JSON.parse(stdout.trim().split("\n").at(-1));
}

const RANK = `const ranking = ranker.rank("How do I reset my password?", ["Bananas are yellow.", "Click 'Forgot password' to reset it."]);`;

test("options.wasm: a URL (streamed or not), a Response, bytes or a compiled module", async () => {
  const forms = {
    url: "new URL('/feedloop_wasm_bg.wasm', base)",
    string: "`${base}/octet/feedloop_wasm_bg.wasm`",
    response: "await fetch(`${base}/feedloop_wasm_bg.wasm`)",
    bytes: "(await import('node:fs/promises')).readFile(wasmFile).then((b) => new Uint8Array(b))",
    arrayBuffer: "(await import('node:fs/promises')).readFile(wasmFile).then((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.length))",
    module: "(await import('node:fs/promises')).readFile(wasmFile).then((b) => WebAssembly.compile(b))",
  };
  for (const [form, expression] of Object.entries(forms)) {
    const top = await fresh(`
      const ranker = await Ranker.create({ wasm: await ${expression}, storage: false });
      ${RANK}
      return ranking[0].index;`);
    assert.equal(top, 1, form);
  }
});

test("a wasm URL that answers with HTML is an Error naming the URL and the fixes", async () => {
  const message = await fresh(`
    try { await Ranker.create({ wasm: base + "/fallback/feedloop_wasm_bg.wasm", storage: false }); return "created"; }
    catch (error) { return error instanceof Error ? error.message : "not an Error: " + error; }`);
  assert.match(message, /\/fallback\/feedloop_wasm_bg\.wasm answered with an HTML page, not the WebAssembly module/);
  assert.match(message, /optimizeDeps: \{ exclude: \["feedloop"\] \}/);
  assert.match(message, /esbuild/);
});

test("a model URL that answers with HTML is an Error naming it; so are bad wasm bytes and kinds", async () => {
  const tryCreate = (options) => fresh(`
    return Ranker.create({ storage: false, ...${options} }).then(() => "created", (e) => e.message);`);
  assert.match(await tryCreate(`{ model: base + "/fallback/model.onnx" }`),
    /\/fallback\/model\.onnx answered with an HTML page, not the ONNX model.*optimizeDeps/);
  assert.match(await tryCreate(`{ wasm: new Uint8Array([1, 2, 3, 4, 5]) }`),
    /options\.wasm is not a WebAssembly module \(its first bytes are 01 02 03 04, not 00 61 73 6d\)/);
  const kind = /options\.wasm must be a URL, a URL string, a Response, an ArrayBuffer, a typed array or a WebAssembly\.Module, got Object/;
  assert.match(await tryCreate(`{ wasm: { url: "no" } }`), kind);
  // Also once a module is loaded (later creates share it, but a wrong kind is still refused).
  const later = await fresh(`
    await Ranker.create({ storage: false });
    return Ranker.create({ storage: false, wasm: { url: "no" } }).then(() => "created", (e) => e.message);`);
  assert.match(later, kind);
});

test("after a failed load a later create retries, and works", async () => {
  const [first, second] = await fresh(`
    const first = await Ranker.create({ wasm: base + "/missing.wasm", storage: false }).then(() => "created", (e) => e.message);
    const ranker = await Ranker.create({ wasm: base + "/feedloop_wasm_bg.wasm", storage: false });
    ${RANK}
    return [first, ranking[0].index];`);
  assert.match(first, /could not fetch the wasm module from .*\/missing\.wasm: HTTP 404/);
  assert.equal(second, 1);
});

test("concurrent creates share one wasm download and one model download; free() twice is safe", async () => {
  requests.length = 0;
  const tops = await fresh(`
    const options = { wasm: base + "/feedloop_wasm_bg.wasm", model: base + "/model.onnx", storage: false };
    const rankers = await Promise.all([Ranker.create(options), Ranker.create(options), Ranker.create(options)]);
    const later = await Ranker.create(options);
    const tops = [...rankers, later].map((ranker) => { ${RANK} return ranking[0].index; });
    for (const ranker of [...rankers, later]) { ranker.free(); ranker.free(); }
    return tops;`);
  assert.deepEqual(tops, [1, 1, 1, 1]);
  assert.deepEqual(requests.sort(), ["/feedloop_wasm_bg.wasm", "/model.onnx"]);
});
