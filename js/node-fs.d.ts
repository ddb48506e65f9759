// The one Node API the package uses (index.ts reads file: URLs from disk in Node), declared here so
// the package needs no @types/node and its own types do not depend on Node's.
declare module "node:fs/promises" {
  export function readFile(path: URL): Promise<Uint8Array>;
}
