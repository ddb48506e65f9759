// Starts the real server (`feedloop serve`, embedded SQLite, serving www/dist) for the e2e tests.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
export const BINARY = process.env.FEEDLOOP_BIN ?? path.join(targetDir, "debug/feedloop");

for (const [file, how] of [
  [path.join(root, "www/dist/index.html"), "npx webpack --mode production"],
  [BINARY, "cargo build -p feedloop-cli"],
]) {
  if (!existsSync(file)) throw new Error(`${file} is missing: build it first with \`${how}\``);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** `feedloop serve` on 127.0.0.1:`port` with a database in `dataDir`; resolves once /healthz answers. */
export async function startServer({ dataDir, port, deploymentKey, adminKey, autoRound, extraArgs = [] }) {
  const args = [
    "serve", "--addr", `127.0.0.1:${port}`,
    "--database", `sqlite://${path.join(dataDir, "feedloop.db")}`,
    "--static-dir", path.join(root, "www/dist"),
    "--deployment-key", `e2e=${deploymentKey}`,
    ...(adminKey ? ["--admin-key", adminKey] : []),
    "--server-lr", "0.1",
    ...(autoRound ? ["--auto-round", JSON.stringify(autoRound)] : []),
    ...extraArgs,
  ];
  return spawnServer(args, port);
}

/** `feedloop serve --role helper` on 127.0.0.1:`port` with its own database in `dataDir`: the
 *  second aggregator of secure rounds, taking `leaderToken` from its leader. */
export async function startHelper({ dataDir, port, leaderToken, extraArgs = [] }) {
  return spawnServer([
    "serve", "--role", "helper", "--addr", `127.0.0.1:${port}`,
    "--database", `sqlite://${path.join(dataDir, "helper.db")}`,
    "--leader-token", leaderToken,
    ...extraArgs,
  ], port);
}

async function spawnServer(args, port) {
  const child = spawn(BINARY, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`feedloop serve exited: ${log}`);
    try {
      if ((await fetch(`${base}/healthz`)).ok) return { child, base, log: () => log };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`feedloop serve did not start: ${log}`);
}
