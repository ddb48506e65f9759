// feedloop — the npm package entry. It initializes the wasm module once, fetches the bundled
// default model (or yours), and hands back a Ranker. Everything else happens in Rust.
//
// Files are located with `new URL(..., import.meta.url)`, which webpack 5, Vite, Rollup and a plain
// <script type="module"> all resolve, so no path has to be hosted or configured by hand.

import initWasm, { WasmRanker } from "./feedloop_wasm.js";

const WASM_URL = new URL("./feedloop_wasm_bg.wasm", import.meta.url);
const DEFAULT_MODEL_URL = new URL("./feedloop-default.onnx", import.meta.url);

let wasmReady = null;

function isFileUrl(url) {
  return url instanceof URL && url.protocol === "file:";
}

// Node has no fetch() for file: URLs; read those from disk. `webpackIgnore` keeps bundlers from
// trying to pack node:fs into a browser build.
async function readFileUrl(url) {
  const fs = await import(/* webpackIgnore: true */ "node:fs/promises");
  return new Uint8Array(await fs.readFile(url));
}

function initialize() {
  if (!wasmReady) {
    wasmReady = (async () => {
      const source = isFileUrl(WASM_URL) ? await readFileUrl(WASM_URL) : WASM_URL;
      await initWasm({ module_or_path: source });
    })();
    wasmReady.catch(() => {
      wasmReady = null; // let a later create() retry, e.g. after a network error
    });
  }
  return wasmReady;
}

async function modelBytes(model) {
  if (model === undefined || model === null) return fetchBytes(DEFAULT_MODEL_URL);
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model);
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer, model.byteOffset, model.byteLength);
  if (typeof model === "string" || model instanceof URL) {
    const base = typeof location !== "undefined" ? location.href : import.meta.url;
    return fetchBytes(new URL(model, base));
  }
  throw new TypeError(
    `feedloop: options.model must be a Uint8Array, an ArrayBuffer, a URL or a URL string, got ${describe(model)}`,
  );
}

async function fetchBytes(url) {
  if (isFileUrl(url)) return readFileUrl(url);
  let response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw new Error(`feedloop: could not fetch the model from ${url}: ${cause.message}`, { cause });
  }
  if (!response.ok) {
    throw new Error(`feedloop: could not fetch the model from ${url}: HTTP ${response.status}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? value.constructor?.name ?? "object" : typeof value;
}

/** Ranks candidate texts for a context with an on-device reward model. */
export class Ranker {
  #inner;

  /** Use `await Ranker.create()`; the constructor is not public API. */
  constructor(inner) {
    if (!(inner instanceof WasmRanker)) {
      throw new TypeError("feedloop: use `await Ranker.create()` to make a Ranker");
    }
    this.#inner = inner;
  }

  /**
   * Loads the wasm module (once) and a model: the bundled default, or `options.model`
   * (bytes, or a URL to fetch).
   */
  static async create(options = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`feedloop: Ranker.create(options) takes an object, got ${describe(options)}`);
    }
    const [bytes] = await Promise.all([modelBytes(options.model), initialize()]);
    return new Ranker(WasmRanker.fromBytes(bytes));
  }

  /** Candidates best first: `[{ index, score }, ...]`. */
  rank(context, candidates) {
    return this.#inner.rank(context, candidates);
  }

  /** One score per candidate, in input order. */
  score(context, candidates) {
    return this.#inner.score(context, candidates);
  }

  /** One L2-normalized Float32Array per text. */
  embed(texts) {
    return this.#inner.embed(texts);
  }

  /** Token ids the model sees for a text (truncated at `info.maxTokens`). */
  tokenize(text) {
    return this.#inner.tokenize(text);
  }

  /** Facts about the loaded model. */
  get info() {
    return this.#inner.info;
  }

  /** Frees the wasm memory held by this ranker; it cannot be used afterwards. */
  free() {
    this.#inner.free();
  }

  [Symbol.dispose]() {
    this.free();
  }
}
