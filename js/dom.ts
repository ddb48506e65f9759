// The DOM helpers and the stylesheet the widgets share (js/widget.ts, js/privacy-panel.ts).

/**
 * How the widgets get their stylesheet. By default a `<style id="feedloop-widget-style">` is added to
 * the document's head once. Under a Content Security Policy without `'unsafe-inline'` styles, pass
 * the page's `styleNonce` (the style element carries it), or `injectStyle: false` and load
 * `feedloop/widget.css` (the same rules, `WIDGET_CSS`) with your own stylesheets.
 */
export interface WidgetStyleOptions {
  /** The nonce of the page's `style-src` policy, set on the injected `<style>`. */
  styleNonce?: string;
  /** false: inject nothing (the page loads feedloop/widget.css itself). Default true. */
  injectStyle?: boolean;
}

const STYLE_ID = "feedloop-widget-style";
/** The widgets' stylesheet (also shipped as feedloop/widget.css). */
export const WIDGET_CSS = `
.feedloop-widget { display: flex; flex-wrap: wrap; gap: .25rem; align-items: center; font: inherit; }
.feedloop-widget button { font: inherit; font-size: .9em; padding: .15rem .45rem; border: 1px solid currentColor;
  border-radius: .3rem; background: transparent; color: inherit; cursor: pointer; opacity: .8; }
.feedloop-widget button:hover, .feedloop-widget button:focus-visible { opacity: 1; }
.feedloop-widget button:focus-visible { outline: 2px solid Highlight; outline-offset: 1px; }
.feedloop-widget button[aria-pressed="true"], .feedloop-widget button[aria-checked="true"] { opacity: 1; font-weight: bold; background: color-mix(in srgb, currentColor 15%, transparent); }
.feedloop-stars { display: inline-flex; gap: 0; }
.feedloop-stars button { border-radius: 0; border-left-width: 0; }
.feedloop-stars button:first-child { border-radius: .3rem 0 0 .3rem; border-left-width: 1px; }
.feedloop-stars button:last-child { border-radius: 0 .3rem .3rem 0; }
.feedloop-edit { display: flex; flex-direction: column; gap: .25rem; width: 100%; }
.feedloop-edit textarea { font: inherit; width: 100%; min-height: 4em; }
.feedloop-status { font-size: .85em; opacity: .75; }
.feedloop-privacy { display: flex; flex-direction: column; gap: .4rem; font: inherit; }
.feedloop-privacy p { margin: 0; }
.feedloop-privacy button { font: inherit; font-size: .9em; padding: .15rem .45rem; border: 1px solid currentColor;
  border-radius: .3rem; background: transparent; color: inherit; cursor: pointer; align-self: flex-start; }
.feedloop-privacy button[role="switch"][aria-checked="true"] { font-weight: bold; background: color-mix(in srgb, currentColor 15%, transparent); }
.feedloop-privacy button:focus-visible { outline: 2px solid Highlight; outline-offset: 1px; }
.feedloop-privacy ul { margin: .25rem 0 0; padding-left: 1.2em; font-size: .9em; }
.feedloop-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

export function injectStyle(doc: Document, options: WidgetStyleOptions): void {
  if (options.injectStyle === false || doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  if (options.styleNonce !== undefined) style.nonce = options.styleNonce;
  style.textContent = WIDGET_CSS;
  doc.head.append(style);
}

// `props`: "class", attributes ("aria-*", "role", "type") and any other property of the element.
export function el<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  props: Record<string, string | number | boolean> = {},
  children: (Node | string)[] = [],
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value as string;
    else if (key.startsWith("aria-") || key === "role" || key === "type") node.setAttribute(key, value as string);
    else (node as unknown as Record<string, unknown>)[key] = value;
  }
  node.append(...children);
  return node;
}
