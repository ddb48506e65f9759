import type { Ranker } from "./index.js";
import type { FeedbackOutcome } from "./feedloop_wasm.js";

export type FeedbackControl = "thumbs" | "stars" | "flag" | "edit";

export interface FeedbackWidgetOptions {
  /** How screen readers name the candidate ("this answer" by default). */
  label?: string;
  /** The candidate's text, prefilled in the editor. */
  text?: string;
  /** Which controls to show (all by default). */
  controls?: FeedbackControl[];
  onFeedback?: (outcome: FeedbackOutcome) => void;
  /** Without it, errors are thrown from the event handler (and shown in the widget's status line). */
  onError?: (error: Error) => void;
}

export interface ComparisonOptions {
  question?: string;
  /** Labels of the two options (default "A" and "B"). */
  texts?: [string, string];
  onFeedback?: (outcome: FeedbackOutcome) => void;
  onError?: (error: Error) => void;
}

export interface MountedWidget {
  element: HTMLElement;
  destroy(): void;
}

/** Thumbs, stars, flag and edit-in-place for one ranked candidate. */
export function mountFeedback(
  container: HTMLElement,
  ranker: Ranker,
  candidate: string,
  options?: FeedbackWidgetOptions,
): MountedWidget;

/** "Which is better?" for two ranked candidates. */
export function mountComparison(
  container: HTMLElement,
  ranker: Ranker,
  candidates: [string, string],
  options?: ComparisonOptions,
): MountedWidget;
