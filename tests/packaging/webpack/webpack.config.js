// webpack 5 as an app configures it: nothing feedloop-specific (its `new URL(…, import.meta.url)`
// assets are copied and hashed by webpack itself).
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: "production",
  context: here,
  entry: "./main.js",
  output: { path: path.join(here, "dist"), clean: true },
  performance: { hints: false },
};
