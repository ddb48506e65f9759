// What every setup of the matrix runs, the way an app would: create a ranker from the installed
// package, rank three answers, give the top one a thumbs-down and rank again. `twice` creates two
// rankers at once, as React StrictMode and pages with several widgets do: the harness checks that
// they share one wasm compile and one model download. Each setup imports `Ranker` its own way (a
// bare "feedloop", a path in a Worker, require in CommonJS) and passes it in.

const CONTEXT = "How do I reset my password?";
const CANDIDATES = [
  "The museum opens at nine and closes at five.",
  "To reset your password, click 'Forgot password' on the sign-in page and follow the email link.",
  "Bananas are rich in potassium.",
];

export async function rankAndThumbsDown(Ranker, options = {}) {
  const ranker = await Ranker.create({ storage: false, ...options });
  const result = thumbsDownTheTop(ranker);
  ranker.free();
  ranker.free(); // safe twice
  return result;
}

// On a ranker the app holds (React's hook, Vue's composable).
export function thumbsDownTheTop(ranker) {
  const before = ranker.rank(CONTEXT, CANDIDATES);
  const outcome = ranker.thumbs(before[0].id, false);
  const after = ranker.rank(CONTEXT, CANDIDATES);
  return {
    top: before[0].index,
    topScoreBefore: before[0].score,
    topScoreAfter: after.find((c) => c.id === before[0].id).score,
    learned: outcome.learned,
  };
}

export async function twice(Ranker, options = {}) {
  const [a, b] = await Promise.all([rankAndThumbsDown(Ranker, options), rankAndThumbsDown(Ranker, options)]);
  return { ...a, same: a.top === b.top && a.topScoreBefore === b.topScoreBefore };
}

// For pages: the result (or the error's message) where the harness reads it.
export function report(promise) {
  globalThis.feedloopCheck = promise.then(
    (result) => result,
    (error) => ({ error: String(error?.message ?? error) }),
  );
}
