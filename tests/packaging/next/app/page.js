// A server component: feedloop runs in Node at render time (no options: the package finds its own
// files, though the bundle gives it path-only URLs).
import { Ranker } from "feedloop";
import { rankAndThumbsDown } from "../../shared/check.js";

export const dynamic = "force-dynamic";

export default async function Page() {
  const result = await rankAndThumbsDown(Ranker).catch((error) => ({ error: String(error.message) }));
  return <pre id="result">{JSON.stringify(result)}</pre>;
}
