// "Your privacy": what this device has shared, in plain words, for the person using the page — from
// the privacy ledger (when, what kind, how much budget), what is left, a switch for sharing (the
// user's consent) and "forget what I taught it". Plain DOM, keyboard usable (a real switch button,
// a disclosure for the list), announced to screen readers.

import type { Ranker } from "./index.js";
import type { PrivacyReport } from "./feedloop_wasm.js";
import { el, injectStyle } from "./dom.js";
import type { WidgetStyleOptions } from "./dom.js";
import type { MountedWidget } from "./widget.js";

export interface PrivacyPanelOptions extends WidgetStyleOptions {
  /** The panel's title ("Your privacy"). */
  title?: string;
  /** What the site calls what is shared ("privatized improvements to the ranking"). */
  sharingLabel?: string;
  /** Called after the user turned sharing on or off. */
  onConsentChange?: (granted: boolean) => void;
  /** Called after "forget what I taught it". */
  onForget?: () => void;
  /** Without it, errors are shown in the panel's status line and thrown from the handler. */
  onError?: (error: Error) => void;
}

// One ledger entry as `privacyReport().ledger.entries` carries it (docs/PRIVACY.md §5).
interface LedgerLine {
  time_ms: number;
  purpose: string;
  epsilon: number;
  params: { mechanism: string; granted?: boolean };
}

// A sealed (secure) metric report's purpose, in words.
const SEALED: Record<string, string> = {
  "thumbs-up rate of the top-ranked answer": "your thumbs-up or down",
  "star rating (CSAT)": "your star rating",
  "federated evaluation: did the model agree with the user's choice": "whether the model agreed with your choice",
};

// What each purpose is, in words a person reads.
const KINDS: Record<string, string> = {
  "reward-head update": "a privatized model improvement",
  "thumbs-up rate of the top-ranked answer": "a randomized thumbs-up report",
  "star rating (CSAT)": "a randomized star rating",
  "federated evaluation: did the model agree with the user's choice": "a randomized report of whether the model agreed with your choice",
  "feedback volume: did the user give one sampled kind of feedback": "a randomized report of whether you gave one kind of feedback, picked at random",
};

function lines(report: PrivacyReport): LedgerLine[] {
  const entries = (report.ledger as { entries?: unknown } | null)?.entries;
  return Array.isArray(entries) ? (entries as LedgerLine[]) : [];
}

function describeLine(line: LedgerLine): string {
  const when = new Date(line.time_ms).toLocaleString();
  if (line.params.mechanism === "consent") {
    return `${when}: sharing turned ${line.params.granted ? "on" : "off"}`;
  }
  const kind =
    line.params.mechanism === "secure_aggregation"
      ? "a model improvement, split between two independent servers"
      : line.params.mechanism === "secure_histogram"
        ? `${SEALED[line.purpose] ?? "a report"}, split between two independent servers that only ever see totals`
        : (KINDS[line.purpose] ?? line.purpose);
  return `${when}: ${kind} (privacy cost ε = ${line.epsilon.toFixed(2)})`;
}

/**
 * Mounts the end user's privacy panel into `container`: whether sharing is on (a switch that
 * calls `ranker.setConsent`), how many times and what this device shared, how much of its privacy
 * budget that used and what is left, and a button that forgets what this device learned
 * (`ranker.resetLearning()`). It follows the ranker's `sync` and `consent` events.
 *
 * ```js
 * import { mountPrivacyPanel } from "feedloop/widget";
 * const panel = mountPrivacyPanel(document.querySelector("#privacy"), ranker);
 * panel.destroy();
 * ```
 */
export function mountPrivacyPanel(
  container: HTMLElement,
  ranker: Ranker,
  options: PrivacyPanelOptions = {},
): MountedWidget {
  const doc = container.ownerDocument;
  injectStyle(doc, options);
  const title = options.title ?? "Your privacy";
  const sharing = options.sharingLabel ?? "privatized improvements to the ranking";
  const heading = el(doc, "strong", { textContent: title });
  heading.id = `feedloop-privacy-${Math.random().toString(36).slice(2)}`;
  const root = el(doc, "section", { class: "feedloop-privacy", "aria-labelledby": heading.id });
  const explanation = el(doc, "p", {
    textContent:
      `What you teach this page stays on this device. With sharing on, it may also send ${sharing}: ` +
      "noisy summaries that reveal very little about you and never contain your text or your clicks, each paid from a " +
      "privacy budget. Sharing pauses when the budget is used up.",
  });
  const toggle = el(doc, "button", { type: "button", role: "switch", "aria-checked": "false" });
  const summary = el(doc, "p");
  const budget = el(doc, "p");
  const history = el(doc, "ul");
  const details = el(doc, "details", {}, [el(doc, "summary", { textContent: "What this device shared" }), history]);
  const forget = el(doc, "button", { type: "button", textContent: "Forget what I taught it" });
  const status = el(doc, "span", { class: "feedloop-status", role: "status", "aria-live": "polite" });

  const fail = (what: string, error: unknown) => {
    status.textContent = `Could not ${what}: ${(error as Error).message}`;
    if (options.onError) options.onError(error as Error);
    else throw error;
  };

  const render = () => {
    const report = ranker.privacyReport();
    const on = report.consent.granted;
    toggle.setAttribute("aria-checked", String(on));
    toggle.textContent = `Sharing is ${on ? "on" : "off"}`;
    const shared = lines(report).filter((line) => line.params.mechanism !== "consent");
    summary.textContent = shared.length === 0
      ? "This device has not shared anything."
      : `This device shared ${shared.length === 1 ? "once" : `${shared.length} times`}, last on ${new Date(shared.at(-1)!.time_ms).toLocaleString()}.`;
    const used = Number.isFinite(report.spent.windowEpsilon) ? report.spent.windowEpsilon : 0;
    const days = Math.round(report.policy.windowDays);
    budget.textContent =
      `Privacy budget used in the last ${days} days: ε = ${used.toFixed(2)} of ${report.policy.epsilon.toFixed(2)} ` +
      `(${Math.min(100, Math.round((100 * used) / report.policy.epsilon))} %).`;
    history.replaceChildren(
      ...lines(report).slice().reverse().map((line) => el(doc, "li", { textContent: describeLine(line) })),
    );
    if (history.childElementCount === 0) history.append(el(doc, "li", { textContent: "Nothing yet." }));
  };

  toggle.addEventListener("click", async () => {
    const granted = toggle.getAttribute("aria-checked") !== "true";
    toggle.disabled = true;
    try {
      await ranker.setConsent(granted);
      status.textContent = granted ? "Sharing is on. Thank you." : "Sharing is off; nothing waiting to be sent will be.";
      render();
      options.onConsentChange?.(granted);
    } catch (error) {
      fail("change sharing", error);
    } finally {
      toggle.disabled = false;
    }
  });
  forget.addEventListener("click", () => {
    try {
      ranker.resetLearning();
      status.textContent = "Forgotten: the ranking is the shared model's again.";
      options.onForget?.();
    } catch (error) {
      fail("forget", error);
    }
  });

  const onChange = () => render();
  ranker.addEventListener("sync", onChange);
  ranker.addEventListener("consent", onChange);
  root.append(heading, explanation, toggle, summary, budget, details, forget, status);
  render();
  container.append(root);
  return {
    element: root,
    destroy: () => {
      ranker.removeEventListener("sync", onChange);
      ranker.removeEventListener("consent", onChange);
      root.remove();
    },
  };
}
