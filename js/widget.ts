// feedloop's feedback widget: thumbs, stars, flag and edit-in-place for one candidate, and a "which
// is better?" prompt for a pair. Plain DOM, keyboard accessible (real buttons, radio-like star group
// with arrow keys), labelled for screen readers, minimal styling that inherits the page's font and
// colours (override the `.feedloop-*` classes to restyle).

import type { Ranker } from "./index.js";
import type { FeedbackOutcome, FlagCategory } from "./feedloop_wasm.js";
import { flagCategories } from "./feedloop_wasm.js";
import { el, injectStyle } from "./dom.js";
import type { WidgetStyleOptions } from "./dom.js";

export { WIDGET_CSS } from "./dom.js";
export type { WidgetStyleOptions } from "./dom.js";
export { mountPrivacyPanel } from "./privacy-panel.js";
export type { PrivacyPanelOptions } from "./privacy-panel.js";

/** The core's flag categories with their labels ("off-topic" → "Off-topic"). Called once a ranker
 *  exists, so the wasm module is initialized. */
function flags(): [FlagCategory, string][] {
  return flagCategories().map((value) => [value, value.charAt(0).toUpperCase() + value.slice(1)]);
}

export type FeedbackControl = "thumbs" | "stars" | "flag" | "edit";

export interface FeedbackWidgetOptions extends WidgetStyleOptions {
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

export interface ComparisonOptions extends WidgetStyleOptions {
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


/**
 * Thumbs, stars, flag and edit-in-place for one ranked candidate: mounts feedback controls for
 * `candidate` (an id the ranker has ranked) into `container`.
 *
 * ```js
 * import { mountFeedback } from "feedloop/widget";
 * const widget = mountFeedback(document.querySelector("#answer-3 .tools"), ranker, "answer-3", {
 *   label: "this answer", text: answerText, onFeedback: () => rerender(),
 * });
 * widget.destroy();
 * ```
 *
 * Options: `label` (how screen readers name the candidate, default "this answer"), `text` (the
 * candidate's text, shown in the editor), `controls` (subset of ["thumbs", "stars", "flag", "edit"]),
 * `onFeedback(outcome)` and `onError(error)` callbacks, and the style options (`styleNonce`,
 * `injectStyle`) for pages with a Content Security Policy.
 */
export function mountFeedback(
  container: HTMLElement,
  ranker: Ranker,
  candidate: string,
  options: FeedbackWidgetOptions = {},
): MountedWidget {
  const doc = container.ownerDocument;
  injectStyle(doc, options);
  const label = options.label ?? "this answer";
  const controls = new Set(options.controls ?? ["thumbs", "stars", "flag", "edit"]);
  const status = el(doc, "span", { class: "feedloop-status", role: "status", "aria-live": "polite" });
  const root = el(doc, "div", { class: "feedloop-widget", role: "group", "aria-label": `Feedback on ${label}` });

  const send = (what: string, action: () => FeedbackOutcome): FeedbackOutcome | null => {
    try {
      const outcome = action();
      status.textContent = outcome.learned ? `Thanks: ${what}` : `Noted: ${what}`;
      options.onFeedback?.(outcome);
      return outcome;
    } catch (error) {
      status.textContent = `Could not record feedback: ${(error as Error).message}`;
      if (options.onError) options.onError(error as Error);
      else throw error;
      return null;
    }
  };

  if (controls.has("thumbs")) {
    const up = el(doc, "button", { type: "button", "aria-label": `Good: ${label}`, "aria-pressed": "false", textContent: "▲ Good" });
    const down = el(doc, "button", { type: "button", "aria-label": `Bad: ${label}`, "aria-pressed": "false", textContent: "▼ Bad" });
    up.dataset.feedloop = "thumbs-up";
    down.dataset.feedloop = "thumbs-down";
    const press = (isUp: boolean) => {
      up.setAttribute("aria-pressed", String(isUp));
      down.setAttribute("aria-pressed", String(!isUp));
      send(isUp ? "thumbs up" : "thumbs down", () => ranker.thumbs(candidate, isUp));
    };
    up.addEventListener("click", () => press(true));
    down.addEventListener("click", () => press(false));
    root.append(up, down);
  }

  if (controls.has("stars")) {
    const group = el(doc, "span", { class: "feedloop-stars", role: "radiogroup", "aria-label": `Rate ${label}` });
    const stars = [1, 2, 3, 4, 5].map((n) =>
      el(doc, "button", {
        type: "button",
        role: "radio",
        "aria-checked": "false",
        "aria-label": `${n} star${n > 1 ? "s" : ""}`,
        tabIndex: n === 1 ? 0 : -1,
        textContent: "★",
      }),
    );
    const choose = (n: number) => {
      stars.forEach((s, i) => {
        s.setAttribute("aria-checked", String(i + 1 === n));
        s.tabIndex = i + 1 === n ? 0 : -1;
        s.textContent = i < n ? "★" : "☆";
      });
      send(`${n} star${n > 1 ? "s" : ""}`, () => ranker.rate(candidate, n));
    };
    stars.forEach((star, i) => {
      star.dataset.feedloop = `stars-${i + 1}`;
      star.addEventListener("click", () => choose(i + 1));
      // Arrow keys move between stars, as in any radio group.
      star.addEventListener("keydown", (e) => {
        const step = ({ ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 } as Record<string, number | undefined>)[e.key];
        if (!step) return;
        e.preventDefault();
        stars[Math.min(4, Math.max(0, i + step))].focus();
      });
    });
    group.append(...stars);
    root.append(group);
  }

  if (controls.has("flag")) {
    const select = el(doc, "select", { "aria-label": `Flag ${label}` }, [
      el(doc, "option", { value: "", textContent: "Flag…" }),
      ...flags().map(([value, text]) => el(doc, "option", { value, textContent: text })),
    ]);
    select.dataset.feedloop = "flag";
    select.addEventListener("change", () => {
      if (!select.value) return;
      const category = select.value as FlagCategory;
      send(`flagged ${category}`, () => ranker.flag(candidate, category));
    });
    root.append(select);
  }

  if (controls.has("edit")) {
    const edit = el(doc, "button", { type: "button", "aria-label": `Suggest a better version of ${label}`, textContent: "Edit" });
    edit.dataset.feedloop = "edit";
    edit.addEventListener("click", () => {
      const area = el(doc, "textarea", { "aria-label": `Your version of ${label}`, value: options.text ?? "" });
      const save = el(doc, "button", { type: "button", textContent: "Save correction" });
      const cancel = el(doc, "button", { type: "button", textContent: "Cancel" });
      const form = el(doc, "div", { class: "feedloop-edit" }, [area, el(doc, "div", {}, [save, cancel])]);
      const close = () => {
        form.remove();
        edit.hidden = false;
        edit.focus();
      };
      save.addEventListener("click", () => {
        if (send("correction saved", () => ranker.correct(candidate, area.value))) close();
      });
      cancel.addEventListener("click", close);
      area.addEventListener("keydown", (e) => e.key === "Escape" && close());
      edit.hidden = true;
      root.append(form);
      area.focus();
    });
    root.append(edit);
  }

  root.append(status);
  container.append(root);
  return { element: root, destroy: () => root.remove() };
}

/**
 * "Which is better?" for two ranked candidates: asks and records the choice. `texts` (optional) are
 * shown as the options; otherwise "A" and "B".
 */
export function mountComparison(
  container: HTMLElement,
  ranker: Ranker,
  [a, b]: [string, string],
  options: ComparisonOptions = {},
): MountedWidget {
  const doc = container.ownerDocument;
  injectStyle(doc, options);
  const [textA, textB] = options.texts ?? ["A", "B"];
  const status = el(doc, "span", { class: "feedloop-status", role: "status", "aria-live": "polite" });
  const question = el(doc, "span", { textContent: options.question ?? "Which is better?" });
  const root = el(doc, "div", { class: "feedloop-widget", role: "group", "aria-label": "Which answer is better?" });
  const pick = (winner: string, loser: string, text: string) => {
    try {
      const outcome = ranker.choose(winner, loser);
      status.textContent = `You chose: ${text}`;
      options.onFeedback?.(outcome);
    } catch (error) {
      status.textContent = `Could not record the choice: ${(error as Error).message}`;
      if (options.onError) options.onError(error as Error);
      else throw error;
    }
  };
  const buttonA = el(doc, "button", { type: "button", textContent: textA });
  const buttonB = el(doc, "button", { type: "button", textContent: textB });
  buttonA.dataset.feedloop = "choose-a";
  buttonB.dataset.feedloop = "choose-b";
  buttonA.addEventListener("click", () => pick(a, b, textA));
  buttonB.addEventListener("click", () => pick(b, a, textB));
  root.append(question, buttonA, buttonB, status);
  container.append(root);
  return { element: root, destroy: () => root.remove() };
}
