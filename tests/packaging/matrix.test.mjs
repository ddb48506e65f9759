// The packaging matrix: feedloop installed from `npm pack` (make test-packaging) into this folder's
// node_modules, then used by one small app per bundler, framework and runtime, each checked to its
// first ranking and one thumbs-down — in headless Chromium for pages, in Node for Node. Every page
// creates two rankers at once (React StrictMode does; so do pages with several widgets), and the
// check counts one wasm download and one model download.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { cp, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { createServer as createNetServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { launchChromium } from "../../tools/chromium.mjs";
import { serve } from "../../tools/serve-static.mjs";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const installed = path.join(here, "node_modules/feedloop");
const at = (...parts) => path.join(here, ...parts);

let browser;
before(async () => {
  const manifest = JSON.parse(await readFile(path.join(installed, "package.json"), "utf8").catch(() => "null"));
  assert.ok(manifest?.name === "feedloop", "feedloop is not installed here: run `make test-packaging`");
  browser = await launchChromium();
});
after(() => browser?.close());

// Opens `url` in a fresh browser context; resolves with what the page's check reported, the wasm
// and model requests it made, and any page errors.
async function check(url, { act } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const downloads = { wasm: [], onnx: [] };
  const problems = [];
  page.on("request", (request) => {
    const { pathname } = new URL(request.url());
    if (pathname.endsWith(".wasm")) downloads.wasm.push(pathname);
    if (pathname.endsWith(".onnx")) downloads.onnx.push(pathname);
  });
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  try {
    await page.goto(url);
    await page.waitForFunction(() => globalThis.feedloopCheck !== undefined, null, { timeout: 60_000 });
    const result = await page.evaluate(() => globalThis.feedloopCheck);
    const extra = act ? await act(page) : undefined;
    return { result, downloads, problems, extra };
  } finally {
    await context.close();
  }
}

// What every working setup shows: the relevant answer first, a thumbs-down that lowered its score
// at once, two rankers that agree, one download of each file.
function assertWorked({ result, downloads, problems }, { shared = true } = {}) {
  assert.equal(result.error, undefined, `the page's check failed: ${result.error}\n${problems.join("\n")}`);
  assert.equal(result.top, 1, "the password answer ranks first");
  assert.equal(result.learned, true);
  assert.ok(result.topScoreAfter < result.topScoreBefore, `thumbs-down: ${result.topScoreBefore} -> ${result.topScoreAfter}`);
  if (shared) {
    if (result.same !== undefined) assert.equal(result.same, true, "two rankers created at once agree");
    assert.equal(downloads.wasm.length, 1, `one wasm download, got ${downloads.wasm.join(", ")}`);
    assert.equal(downloads.onnx.length, 1, `one model download, got ${downloads.onnx.join(", ")}`);
  }
}

function assertNodeWorked(stdout) {
  const result = JSON.parse(stdout.trim().split("\n").at(-1));
  assert.equal(result.top, 1);
  assert.equal(result.learned, true);
  assert.ok(result.topScoreAfter < result.topScoreBefore);
}

async function withStatic(dir, body) {
  const site = await serve(dir, 0);
  try {
    return await body(site.url.replace(/\/$/, ""));
  } finally {
    await site.close();
  }
}

describe("webpack 5", () => {
  test("a browser build, with no feedloop-specific configuration", async () => {
    const { default: webpack } = await import("webpack");
    const { default: config } = await import("./webpack/webpack.config.js");
    await compile(webpack, config);
    await writeFile(at("webpack/dist/index.html"), `<!doctype html><script src="./main.js"></script>`);
    await withStatic(at("webpack/dist"), async (url) => assertWorked(await check(`${url}/index.html`)));
  });

  test("a server bundle with path-only asset URLs (as Next.js builds server components) runs in Node", async () => {
    const { default: webpack } = await import("webpack");
    const { default: config } = await import("./webpack-server/webpack.config.js");
    await compile(webpack, config);
    const bundle = await readFile(at("webpack-server/dist/main.cjs"), "utf8");
    assert.ok(bundle.includes("/_next/"), "the bundle carries path-only asset URLs");
    const { stdout } = await run(process.execPath, [at("webpack-server/dist/main.cjs")], { cwd: here });
    assertNodeWorked(stdout);
  });
});

function compile(webpack, config) {
  return new Promise((resolve, reject) => {
    webpack(config, (error, stats) => {
      if (error) reject(error);
      else if (stats.hasErrors()) reject(new Error(stats.toString({ all: false, errors: true })));
      else resolve(stats);
    });
  });
}

// Vite's JS API (two majors side by side: "vite" is the current one, "vite5" an npm alias).
async function viteDev(vite, { name, configFile, app = "vite" }) {
  const cacheDir = at(`node_modules/.vite-${name}`);
  await rm(cacheDir, { recursive: true, force: true });
  const server = await vite.createServer({
    root: at(app),
    configFile: configFile ? at(`${app}/vite.config.js`) : false,
    cacheDir,
    logLevel: "error",
    server: { host: "127.0.0.1", port: 0, strictPort: false },
  });
  await server.listen();
  const url = server.resolvedUrls.local[0].replace(/\/$/, "");
  return { url, close: () => server.close() };
}

async function viteBuild(vite, { name, app = "vite" }) {
  const outDir = at(`${app}/dist-${name}`);
  await vite.build({
    root: at(app),
    configFile: false,
    cacheDir: at(`node_modules/.vite-${name}`),
    logLevel: "error",
    build: { outDir, emptyOutDir: true },
  });
  return outDir;
}

for (const [label, specifier, name] of [["Vite 8", "vite", "vite8"], ["Vite 5", "vite5", "vite5"]]) {
  describe(label, () => {
    test("production build, with no configuration", async () => {
      const vite = await import(specifier);
      const outDir = await viteBuild(vite, { name: `${name}-build` });
      await withStatic(outDir, async (url) => assertWorked(await check(`${url}/index.html`)));
    });

    test("dev server, with the README's vite.config.js (optimizeDeps.exclude)", async () => {
      const vite = await import(specifier);
      const server = await viteDev(vite, { name: `${name}-dev`, configFile: true });
      try {
        assertWorked(await check(`${server.url}/index.html`));
      } finally {
        await server.close();
      }
    });
  });
}

test("Vue 3 with the README's composable, built by Vite 8", async () => {
  const vite = await import("vite");
  const outDir = await viteBuild(vite, { name: "vue", app: "vue" });
  await withStatic(outDir, async (url) => assertWorked(await check(`${url}/index.html`)));
});

test("Vite 8 dev server with no configuration at all", async () => {
  const vite = await import("vite");
  const server = await viteDev(vite, { name: "vite8-bare", configFile: false });
  try {
    assertWorked(await check(`${server.url}/index.html`));
  } finally {
    await server.close();
  }
});

describe("Vite 8 dev server, feedloop linked from outside the project (a file: install)", () => {
  before(async () => {
    // What `npm install file:../../../pkg` makes: a symlink to the package's folder.
    await rm(at("vite-linked/node_modules"), { recursive: true, force: true });
    await mkdir(at("vite-linked/node_modules"), { recursive: true });
    await symlink(path.relative(at("vite-linked/node_modules"), at("../../pkg")), at("vite-linked/node_modules/feedloop"), "dir");
  });
  after(() => rm(at("vite-linked/node_modules"), { recursive: true, force: true }));

  test("with the README's server.fs.allow", async () => {
    const vite = await import("vite");
    const server = await viteDev(vite, { name: "vite8-linked", configFile: true, app: "vite-linked" });
    try {
      assertWorked(await check(`${server.url}/index.html`));
    } finally {
      await server.close();
    }
  });

  test("without it: the page is told which file it could not fetch (403)", async () => {
    const vite = await import("vite");
    const server = await viteDev(vite, { name: "vite8-linked-bare", configFile: false, app: "vite-linked" });
    try {
      const { result } = await check(`${server.url}/index.html`);
      assert.match(result.error ?? "", /could not fetch the (wasm module|model) from .*\/pkg\/(feedloop_wasm_bg\.wasm|feedloop-default\.onnx).*HTTP 403; Vite's dev server serves files outside the project only if server\.fs\.allow lists/);
    } finally {
      await server.close();
    }
  });
});

test("Vite 5 dev server without the recipe: an Error that names the URL and the fix", async () => {
  // Vite 5–7 pre-bundle the package into node_modules/.vite/deps/, where its files are not
  // (vitejs/vite#8427), and answer with index.html: the page is told why and what to add.
  const vite = await import("vite5");
  const server = await viteDev(vite, { name: "vite5-bare", configFile: false });
  try {
    const { result } = await check(`${server.url}/index.html`);
    // Whichever of the two files is asked for first.
    assert.match(result.error ?? "", /\/deps\/(feedloop_wasm_bg\.wasm|feedloop-default\.onnx) answered with an HTML page/);
    assert.match(result.error, /optimizeDeps: \{ exclude: \["feedloop"\] \}/);
  } finally {
    await server.close();
  }
});

// Next.js: `next build` + `next start` with Turbopack (its default) and with webpack, and `next dev`
// (React StrictMode on).
// The server component ranks at render time in Node; the client page uses the README's React hook.
async function nextServer(command) {
  const port = await freePort();
  const child = spawn(process.execPath, [at("node_modules/next/dist/bin/next"), command, "-p", String(port), "-H", "127.0.0.1"], {
    cwd: at("next"), env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" }, stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`next ${command} did not start:\n${log}`)), 60_000);
    const listen = (chunk) => {
      log += chunk;
      if (/Ready in/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", listen);
    child.stderr.on("data", listen);
    child.on("exit", (code) => reject(new Error(`next ${command} exited (${code}):\n${log}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    log: () => log,
    close: () => new Promise((resolve) => {
      child.once("exit", resolve);
      child.kill("SIGTERM");
    }),
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createNetServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

async function serverComponentResult(url) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(url);
    return JSON.parse(await page.textContent("#result"));
  } finally {
    await context.close();
  }
}

describe("Next.js 16", () => {
  for (const [command, ...flags] of [["build"], ["build", "--webpack"], ["dev"]]) {
    test(`next ${[command, ...flags].join(" ")}: a server component and a client component with the React hook`, async () => {
      if (command === "build") {
        await rm(at("next/.next"), { recursive: true, force: true });
        await run(process.execPath, [at("node_modules/next/dist/bin/next"), "build", ...flags], {
          cwd: at("next"), env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
        }).catch((error) => assert.fail(`next build:\n${error.stdout}${error.stderr}`));
      }
      const server = await nextServer(command === "build" ? "start" : "dev");
      try {
        const rendered = await serverComponentResult(`${server.url}/`);
        assert.equal(rendered.error, undefined, `server component: ${rendered.error}\n${server.log()}`);
        assertNodeWorked(JSON.stringify(rendered));
        assertWorked(await check(`${server.url}/client`));
      } finally {
        await server.close();
      }
    });
  }
});

describe("esbuild", () => {
  // esbuild copies no `new URL(…, import.meta.url)` assets (evanw/esbuild#795): the README's recipe
  // copies the two files next to the bundle.
  const copyAssets = async (dir) => {
    for (const file of ["feedloop_wasm_bg.wasm", "feedloop-default.onnx"]) {
      await cp(path.join(installed, file), path.join(dir, file));
    }
  };

  test("ESM bundle for the browser, the two files copied next to it", async () => {
    const esbuild = await import("esbuild");
    const outdir = at("esbuild/dist");
    await rm(outdir, { recursive: true, force: true });
    await esbuild.build({
      entryPoints: [at("esbuild/main.js")], bundle: true, format: "esm", platform: "browser",
      outdir, logLevel: "error",
    });
    await copyAssets(outdir);
    await cp(at("esbuild/index.html"), path.join(outdir, "index.html"));
    await withStatic(outdir, async (url) => assertWorked(await check(`${url}/index.html`)));
  });

  test("IIFE bundle (no import.meta.url), the files named in Ranker.create", async () => {
    const esbuild = await import("esbuild");
    const outdir = at("esbuild/dist-iife");
    await rm(outdir, { recursive: true, force: true });
    await esbuild.build({
      entryPoints: [at("esbuild/iife.js")], bundle: true, format: "iife", platform: "browser",
      outdir, logLevel: "error",
    });
    await copyAssets(outdir);
    await cp(at("esbuild/iife.html"), path.join(outdir, "index.html"));
    await withStatic(outdir, async (url) => assertWorked(await check(`${url}/index.html`)));
  });
});

describe("no build step", () => {
  test("a plain <script type=\"module\"> with an import map", async () => {
    await withStatic(here, async (url) => assertWorked(await check(`${url}/script/index.html`)));
  });

  test("a module Worker", async () => {
    await withStatic(here, async (url) => assertWorked(await check(`${url}/worker/index.html`)));
  });

  test("a strict Content Security Policy: 'wasm-unsafe-eval', and the widget's style under a nonce", async () => {
    await withStatic(here, async (url) => {
      const outcome = await check(`${url}/csp/index.html`, {
        act: async (page) => {
          await page.getByRole("button", { name: /^Bad:/ }).click();
          return page.evaluate(() => ({
            violations: globalThis.cspViolations,
            display: getComputedStyle(document.querySelector(".feedloop-widget")).display,
            status: document.querySelector(".feedloop-status").textContent,
          }));
        },
      });
      assertWorked(outcome);
      assert.deepEqual(outcome.extra.violations, []);
      assert.equal(outcome.extra.display, "flex", "the widget's stylesheet applies");
      assert.match(outcome.extra.status, /Thanks/);
    });
  });
});

describe("Node", () => {
  test("ES modules", async () => {
    const { stdout } = await run(process.execPath, [at("node/esm.mjs")], { cwd: here });
    assertNodeWorked(stdout);
  });

  test("CommonJS require()", async () => {
    const { stdout } = await run(process.execPath, [at("node/cjs.cjs")], { cwd: here });
    assertNodeWorked(stdout);
  });
});

// TypeScript 5.9 (tsc in JavaScript) and 7.0 (the native compiler; `typescript7`, an npm alias).
for (const [version, tsc] of [["5.9", "node_modules/typescript/bin/tsc"], ["7.0", "node_modules/typescript7/bin/tsc"]]) {
  describe(`TypeScript ${version} strict, skipLibCheck off, no ESNext libs`, () => {
    for (const project of ["ts-dom", "ts-node"]) {
      test(project === "ts-dom" ? "a browser project (DOM lib)" : "a Node-only project (no DOM lib, @types/node)", async () => {
        await run(process.execPath, [at(tsc), "--noEmit", "-p", at(project)]).catch((error) => {
          assert.fail(`tsc ${version} -p ${project}:\n${error.stdout}${error.stderr}`);
        });
      });
    }
  });
}

test("the package's own files: what npm pack put in", async () => {
  const manifest = JSON.parse(await readFile(path.join(installed, "package.json"), "utf8"));
  for (const file of manifest.files) {
    await readFile(path.join(installed, file)); // throws if npm pack left one out
  }
});
