#!/usr/bin/env node
// A tiny static file server for www/dist (the demo and the benchmark), with the content types a
// browser needs for streaming wasm compilation (application/wasm). No dependencies.
//
//   node tools/serve-static.mjs [DIR] [PORT] [HOST]   # defaults: www/dist 8080 127.0.0.1
//
// As a module: `const { url, close } = await serve(dir, 0)` serves on a free port.
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".bin": "application/octet-stream",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
};

export function contentType(file) {
  return CONTENT_TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";
}

async function resolveFile(root, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0")) return null;
  const file = path.resolve(root, "." + path.posix.normalize("/" + decoded));
  if (file !== root && !file.startsWith(root + path.sep)) return null; // outside the root
  try {
    const info = await stat(file);
    if (info.isDirectory()) {
      const index = path.join(file, "index.html");
      const indexInfo = await stat(index);
      return indexInfo.isFile() ? { file: index, size: indexInfo.size } : null;
    }
    return info.isFile() ? { file, size: info.size } : null;
  } catch {
    return null;
  }
}

/**
 * Serves `dir` on `host:port` (port 0 picks a free one). Resolves once listening to
 * `{ server, url, port, close() }`; `url` ends with a slash.
 */
export async function serve(dir, port = 0, { host = "127.0.0.1", quiet = true } = {}) {
  const root = path.resolve(dir);
  const rootInfo = await stat(root).catch(() => null);
  if (!rootInfo?.isDirectory()) throw new Error(`serve-static: ${root} is not a directory`);

  const server = createServer(async (req, res) => {
    const send = (status, body) => {
      res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return send(405, "method not allowed\n");
    }
    const { pathname } = new URL(req.url ?? "/", "http://localhost");
    const found = await resolveFile(root, pathname);
    if (!quiet) console.log(`${req.method} ${pathname} ${found ? 200 : 404}`);
    if (!found) return send(404, `not found: ${pathname}\n`);
    res.writeHead(200, {
      "Content-Type": contentType(found.file),
      "Content-Length": found.size,
      "Cache-Control": "no-store",
      "X-Content-Type-Options": "nosniff",
    });
    if (req.method === "HEAD") return res.end();
    const stream = createReadStream(found.file);
    stream.on("error", () => res.destroy());
    stream.pipe(res);
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const actualPort = server.address().port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    server,
    port: actualPort,
    url: `http://${urlHost}:${actualPort}/`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const [dir = "www/dist", portArg = "8080", host = "127.0.0.1"] = process.argv.slice(2);
  const port = Number.parseInt(portArg, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`usage: node tools/serve-static.mjs [DIR] [PORT] [HOST]  (bad port: ${portArg})`);
    process.exit(2);
  }
  try {
    const { url } = await serve(dir, port, { host, quiet: !process.env.VERBOSE });
    console.log(`Serving ${path.resolve(dir)} at ${url}`);
    console.log("Press Ctrl+C to stop.");
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
}
