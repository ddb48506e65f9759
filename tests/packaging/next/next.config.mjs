// Nothing feedloop-specific: client components load the package's files from /_next/static/media/,
// server components find them in node_modules. The root is the matrix folder, whose node_modules
// holds next and feedloop.
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");

export default {
  turbopack: { root },
  outputFileTracingRoot: root,
};
