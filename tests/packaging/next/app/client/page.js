"use client";
// A client component with the README's hook (one module-level ranker; StrictMode is on in dev).
import { useEffect } from "react";
import { useRanker } from "../../../react/use-ranker.js";
import { report, thumbsDownTheTop } from "../../../shared/check.js";

let reported = false;

export default function Page() {
  const { ranker, error } = useRanker({ storage: false });
  useEffect(() => {
    if (reported || !(ranker || error)) return;
    reported = true;
    report(error ? Promise.reject(error) : Promise.resolve().then(() => thumbsDownTheTop(ranker)));
  }, [ranker, error]);
  return <p>{ranker ? "ranked" : error ? String(error.message) : "loading"}</p>;
}
