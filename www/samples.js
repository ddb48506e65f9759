// Sample questions for the demo, the benchmark and the core's learning tests (all read
// samples.json). Each has one clearly best answer (`best`, an index into `candidates`), a few
// partially relevant ones and one off-topic one.

import samples from "./samples.json";

export const SAMPLES = samples;

/** All candidate answers across the samples, in a stable order. */
export function allAnswers() {
  return SAMPLES.flatMap((sample) => sample.candidates);
}

/**
 * `count` real-ish candidate texts: the sample answers, cycled, with a light variation on each
 * repeat so no two candidates are identical.
 */
export function candidatePool(count) {
  const answers = allAnswers();
  const prefixes = ["", "In short: ", "Good question. ", "As far as I know, ", "Update: ", "Note that "];
  const out = [];
  for (let i = 0; i < count; i++) {
    const round = Math.floor(i / answers.length);
    const prefix = prefixes[round % prefixes.length];
    const suffix = round >= prefixes.length ? ` (#${round})` : "";
    out.push(prefix + answers[i % answers.length] + suffix);
  }
  return out;
}
