// A server bundle as Next.js's webpack builds one for server components: target node, assets under a
// path-only public path, `new URL(…, import.meta.url)` turned into path-only URLs
// (`javascript.url: "relative"`). feedloop then finds its files in node_modules itself.
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: "production",
  target: "node20",
  context: here,
  entry: "./main.js",
  output: { path: path.join(here, "dist"), filename: "main.cjs", publicPath: "/_next/", clean: true },
  module: { parser: { javascript: { url: "relative" } } },
  performance: { hints: false },
};
