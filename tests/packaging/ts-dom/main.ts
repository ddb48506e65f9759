import { Ranker, type FeedbackOutcome, type RankerOptions } from "feedloop";
import { mountFeedback } from "feedloop/widget";

const options: RankerOptions = { storage: false, wasm: new URL("/feedloop_wasm_bg.wasm", location.href) };
const ranker = await Ranker.create(options);
const ranked = ranker.rank("How do I reset my password?", ["Click 'Forgot password'.", "Bananas."]);
const stars: number = Number((document.querySelector("input") as HTMLInputElement | null)?.value ?? "4");
const outcome: FeedbackOutcome = ranker.rate(ranked[0].id, stars);
mountFeedback(document.body, ranker, ranked[0].id, { onFeedback: (o) => console.log(o.learned, outcome.learned) });
ranker[Symbol.dispose]();
ranker.free();
