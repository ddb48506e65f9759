// The README's Vue recipe: one ranker per page at module level, handed to components in a
// shallowRef — a deep ref would wrap the Ranker in a reactive Proxy, and its private fields (and the
// wasm object behind them) do not work through one.
import { onMounted, shallowRef } from "vue";
import { Ranker } from "feedloop";

let shared = null;

export function getRanker(options) {
  shared ??= Ranker.create(options);
  shared.catch(() => (shared = null));
  return shared;
}

export function useRanker(options) {
  const ranker = shallowRef(null);
  const error = shallowRef(null);
  onMounted(() => {
    getRanker(options).then(
      (value) => (ranker.value = value),
      (value) => (error.value = value),
    );
  });
  return { ranker, error };
}
