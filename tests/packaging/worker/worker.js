import { Ranker } from "/node_modules/feedloop/index.js";
import { twice } from "/shared/check.js";

twice(Ranker).then(
  (result) => postMessage(result),
  (error) => postMessage({ error: String(error?.message ?? error) }),
);
