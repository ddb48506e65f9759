// The README's React recipe: one ranker per page, kept at module level. Components share it, and
// StrictMode's second mount (or a remount) finds the same one instead of creating and freeing
// rankers: one IndexedDB state, one sync schedule.
import { useEffect, useState } from "react";
import { Ranker } from "feedloop";

let shared = null;

export function getRanker(options) {
  shared ??= Ranker.create(options);
  shared.catch(() => (shared = null)); // a failed create is retried by the next component
  return shared;
}

export function useRanker(options) {
  const [state, setState] = useState({ ranker: null, error: null });
  useEffect(() => {
    let mounted = true;
    getRanker(options).then(
      (ranker) => mounted && setState({ ranker, error: null }),
      (error) => mounted && setState({ ranker: null, error }),
    );
    return () => {
      mounted = false;
    };
  }, []);
  return state;
}
