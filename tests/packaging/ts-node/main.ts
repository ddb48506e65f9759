import { readFile } from "node:fs/promises";
import { Ranker } from "feedloop";

const model = await readFile(new URL(import.meta.resolve("feedloop/feedloop-default.onnx")));
const ranker = await Ranker.create({ model, storage: false });
const [best] = ranker.rank("How do I reset my password?", ["Click 'Forgot password'.", "Bananas."]);
console.log(best.id, ranker.thumbs(best.id, false).learned);
ranker[Symbol.dispose]();
