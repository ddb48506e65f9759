// The README's recipe for a `file:` (symlinked) install, as in a monorepo: the package's real files
// lie outside this project, and Vite's dev server serves only what `server.fs.allow` lists (403
// otherwise). Here the link points at the repository's pkg/, three folders up.
import { searchForWorkspaceRoot } from "vite";

export default {
  server: { fs: { allow: [searchForWorkspaceRoot(import.meta.dirname), "../../../pkg"] } },
};
