// Loading the package's two assets (the wasm module and the default model) in every place a web
// developer runs it: a browser page, a bundle (webpack, Vite, Rollup, esbuild, Next.js), a Worker,
// Node and server-side rendering.
//
// - Each is fetched and compiled once per page: every `Ranker.create` shares one compiled module and
//   one model download (React StrictMode creates twice; pages mount several widgets).
// - Files are located with `new URL(..., import.meta.url)`, which webpack 5, Vite, Rollup and a plain
//   <script type="module"> resolve. Where that URL is path-only (webpack's server bundles, e.g. Next.js
//   server components, give "/_next/static/media/…") or a file: URL, Node reads the package's own
//   file from disk instead.
// - No Node-only import a bundler could see: Node's fs is reached through `process.getBuiltinModule`
//   (Node ≥ 20.16), so browser bundles (esbuild included) have nothing to resolve.
// - A wasm URL that answers with something else (a dev server's index.html) is an Error naming the
//   URL and the usual fix, not WebAssembly's "expected magic word".

import initWasm from "./feedloop_wasm.js";

/** Where a model comes from: its bytes, or a URL to fetch it from. */
export type ModelSource = Uint8Array | ArrayBuffer | ArrayBufferView | URL | string;

/**
 * Where the wasm module comes from, for setups that host the package's files themselves (a CDN, a
 * bundler that does not copy `new URL` assets): a URL, a fetch Response, its bytes, or a compiled
 * module. By default the package's own `feedloop_wasm_bg.wasm`, next to its JS.
 */
export type WasmSource = URL | string | Response | ArrayBuffer | ArrayBufferView | WebAssembly.Module;

const WASM_FILE = "feedloop_wasm_bg.wasm";
const MODEL_FILE = "feedloop-default.onnx";
// Written out in full so that bundlers see (and copy) both files; null where the bundle has no
// import.meta.url (esbuild's IIFE and CommonJS output), and `options.wasm`/`model` must name them.
const WASM_URL = packageFile(() => new URL("./feedloop_wasm_bg.wasm", import.meta.url));
const DEFAULT_MODEL_URL = packageFile(() => new URL("./feedloop-default.onnx", import.meta.url));
const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

let wasmReady: Promise<void> | null = null;
// One download per model URL; a failed one is forgotten so that a later create() retries.
const modelDownloads = new Map<string, Promise<Uint8Array>>();

interface NodeProcess {
  versions?: { node?: string };
  cwd?(): string;
  getBuiltinModule?(id: string): unknown;
}
interface NodeFs { readFile(path: string | URL): Promise<Uint8Array> }
interface NodeModule { createRequire(from: string): { resolve(request: string): string } }
interface NodeUrl { pathToFileURL(path: string): URL }

function packageFile(locate: () => URL): URL | null {
  try {
    return locate();
  } catch {
    return null;
  }
}

function nodeProcess(): NodeProcess | null {
  const process = (globalThis as { process?: NodeProcess }).process;
  return process?.versions?.node ? process : null;
}

function builtin<T>(id: string): T {
  const module = nodeProcess()?.getBuiltinModule?.(id);
  if (!module) {
    throw new Error(
      `feedloop: reading the package's files from disk needs Node ≥ 20.16 (process.getBuiltinModule); ` +
        `pass Ranker.create({ wasm, model }) bytes instead`,
    );
  }
  return module as T;
}

/**
 * The URL of one of the package's files. A bundler may have replaced `new URL(…, import.meta.url)`
 * by something path-only ("/_next/static/media/…"): in a browser that is relative to the page; in
 * Node it names nothing on disk, so the file is found through the package's exports map.
 */
function assetUrl(bundled: URL | null, file: string): URL {
  if (bundled === null) {
    throw new Error(
      `feedloop: this bundle has no import.meta.url to find ${file} by (an IIFE or CommonJS bundle): ` +
        `copy node_modules/feedloop/${WASM_FILE} and ${MODEL_FILE} to your site and pass their URLs, ` +
        `Ranker.create({ wasm: "/${WASM_FILE}", model: "/${MODEL_FILE}" })`,
    );
  }
  const href = String(bundled);
  if (URL.canParse(href)) return new URL(href);
  if (typeof location !== "undefined") return new URL(href, location.href);
  const process = nodeProcess();
  if (process?.cwd) {
    const { createRequire } = builtin<NodeModule>("node:module");
    const { pathToFileURL } = builtin<NodeUrl>("node:url");
    try {
      return pathToFileURL(createRequire(`${process.cwd()}/`).resolve(`feedloop/${file}`));
    } catch (cause) {
      throw new Error(
        `feedloop: the bundle gave the path-only URL ${href} for ${file}, and feedloop/${file} is not ` +
          `installed under ${process.cwd()}; pass Ranker.create({ wasm, model }) URLs or bytes, or keep ` +
          `feedloop out of the server bundle (Next.js: serverExternalPackages: ["feedloop"])`,
        { cause },
      );
    }
  }
  throw new Error(`feedloop: cannot resolve the path-only URL ${href} for ${file} without a page location`);
}

function bytesOf(source: ArrayBuffer | ArrayBufferView): Uint8Array {
  return source instanceof ArrayBuffer
    ? new Uint8Array(source)
    : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
}

async function fetchFile(url: URL, what: string): Promise<Response | Uint8Array> {
  if (url.protocol === "file:") {
    try {
      return new Uint8Array(await builtin<NodeFs>("node:fs/promises").readFile(url));
    } catch (cause) {
      throw new Error(`feedloop: could not read ${what} from ${url}: ${(cause as Error).message}`, { cause });
    }
  }
  let response: Response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw new Error(`feedloop: could not fetch ${what} from ${url}: ${(cause as Error).message}`, { cause });
  }
  if (!response.ok) {
    // Vite's dev server refuses files outside its allow-list, e.g. a `file:`-linked package's.
    const hint = response.status === 403 && url.pathname.startsWith("/@fs/")
      ? `; Vite's dev server serves files outside the project only if server.fs.allow lists their folder`
      : "";
    throw new Error(`feedloop: could not fetch ${what} from ${url}: HTTP ${response.status}${hint}`);
  }
  return response;
}

// Where a file should be, a dev server's fallback page (index.html) was: what usually causes that.
const HTML_FIXES =
  `With Vite's dev server (5 to 7), add optimizeDeps: { exclude: ["feedloop"] } to vite.config; ` +
  `with esbuild, copy node_modules/feedloop/${WASM_FILE} and ${MODEL_FILE} next to the bundle; ` +
  `or pass their URLs, Ranker.create({ wasm, model })`;

function answeredHtml(from: string, what: string): Error {
  return new Error(`feedloop: ${from} answered with an HTML page, not ${what} (a dev server's fallback page). ${HTML_FIXES}`);
}

/** An Error for bytes that are not a wasm module, naming where they came from and the usual cause. */
function notWasm(bytes: Uint8Array, from: string): Error | null {
  if (WASM_MAGIC.every((byte, i) => bytes[i] === byte)) return null;
  const head = new TextDecoder().decode(bytes.subarray(0, 64)).trimStart();
  if (head.startsWith("<")) return answeredHtml(from, "the WebAssembly module");
  const first = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return new Error(`feedloop: ${from} is not a WebAssembly module (its first bytes are ${first}, not 00 61 73 6d)`);
}

async function compile(source: WasmSource | undefined): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const bytes = bytesOf(source);
    const problem = notWasm(bytes, "options.wasm");
    if (problem) throw problem;
    return WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  }
  let response: Response | Uint8Array;
  let from: string;
  if (source === undefined) {
    // The package's own file (a bundler may have made its URL path-only: see assetUrl).
    const url = assetUrl(WASM_URL, WASM_FILE);
    response = await fetchFile(url, "the wasm module");
    from = String(url);
  } else if (typeof Response !== "undefined" && source instanceof Response) {
    response = source;
    from = source.url || "the wasm Response";
    if (!source.ok) throw new Error(`feedloop: could not fetch the wasm module from ${from}: HTTP ${source.status}`);
  } else if (typeof source === "string" || source instanceof URL) {
    const url = new URL(source, baseUrl());
    response = await fetchFile(url, "the wasm module");
    from = String(url);
  } else {
    throw wrongWasmSource(source);
  }
  if (response instanceof Uint8Array) {
    const problem = notWasm(response, from);
    if (problem) throw problem;
    return WebAssembly.compile(response as Uint8Array<ArrayBuffer>);
  }
  // Compiling while downloading needs the right content type; otherwise (or if it fails) read the
  // bytes, so a wrong answer is named for what it is.
  const type = response.headers.get("content-type") ?? "";
  if (type.startsWith("application/wasm") && typeof WebAssembly.compileStreaming === "function") {
    const copy = response.clone();
    try {
      return await WebAssembly.compileStreaming(response);
    } catch (error) {
      throw notWasm(new Uint8Array(await copy.arrayBuffer()), from) ?? error;
    }
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const problem = notWasm(bytes, from);
  if (problem) throw problem;
  return WebAssembly.compile(bytes);
}

/**
 * Compiles and instantiates the wasm module, once per page: the first `wasm` source given wins, and
 * later calls share it. A failure is forgotten, so a later call retries (e.g. after a network error).
 */
export function initialize(wasm?: WasmSource): Promise<void> {
  // The kind is checked on every call, also the ones that will share an already loaded module.
  if (wasm !== undefined && !isWasmSource(wasm)) return Promise.reject(wrongWasmSource(wasm));
  if (!wasmReady) {
    wasmReady = (async () => {
      const module = await compile(wasm);
      await initWasm({ module_or_path: module });
    })();
    wasmReady.catch(() => {
      wasmReady = null;
    });
  }
  return wasmReady;
}

function isWasmSource(value: unknown): value is WasmSource {
  return typeof value === "string" || value instanceof URL || value instanceof ArrayBuffer ||
    ArrayBuffer.isView(value) || value instanceof WebAssembly.Module ||
    (typeof Response !== "undefined" && value instanceof Response);
}

function wrongWasmSource(value: unknown): TypeError {
  return new TypeError(
    `feedloop: options.wasm must be a URL, a URL string, a Response, an ArrayBuffer, a typed array or a WebAssembly.Module, got ${describe(value)}`,
  );
}

function baseUrl(): string {
  return typeof location !== "undefined" ? location.href : import.meta.url;
}

/** The model's bytes: given, or fetched (once per URL, shared by every create). */
export async function modelBytes(model: ModelSource | undefined | null): Promise<Uint8Array> {
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer || ArrayBuffer.isView(model)) return bytesOf(model);
  let url: URL;
  if (model === undefined || model === null) url = assetUrl(DEFAULT_MODEL_URL, MODEL_FILE);
  else if (typeof model === "string" || model instanceof URL) url = new URL(model, baseUrl());
  else {
    throw new TypeError(
      `feedloop: options.model must be a Uint8Array, an ArrayBuffer, a URL or a URL string, got ${describe(model)}`,
    );
  }
  let download = modelDownloads.get(url.href);
  if (!download) {
    download = (async () => {
      const answer = await fetchFile(url, "the model");
      if (answer instanceof Uint8Array) return answer;
      if ((answer.headers.get("content-type") ?? "").startsWith("text/html")) {
        throw answeredHtml(String(url), "the ONNX model");
      }
      return new Uint8Array(await answer.arrayBuffer());
    })();
    modelDownloads.set(url.href, download);
    download.catch(() => modelDownloads.delete(url.href));
  }
  return download;
}

export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? value.constructor?.name ?? "object" : typeof value;
}
