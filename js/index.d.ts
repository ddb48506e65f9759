import type { RankedCandidate, ModelInfo } from "./feedloop_wasm.js";
export type { RankedCandidate, ModelInfo } from "./feedloop_wasm.js";

/** Where a model comes from: its bytes, or a URL to fetch it from. */
export type ModelSource = Uint8Array | ArrayBuffer | ArrayBufferView | URL | string;

export interface RankerOptions {
  /** An ONNX model meeting the feedloop contract; the bundled default model when absent. */
  model?: ModelSource;
}

/** Ranks candidate texts for a context with an on-device reward model. */
export class Ranker {
  private constructor();
  /** Loads the wasm module (once) and a model. Rejects with an `Error` naming what is wrong. */
  static create(options?: RankerOptions): Promise<Ranker>;
  /** Candidates best first. Throws an `Error` if `context` is not a string or `candidates` not a string[]. */
  rank(context: string, candidates: string[]): RankedCandidate[];
  /** One score per candidate, in input order. */
  score(context: string, candidates: string[]): Float32Array;
  /** One L2-normalized Float32Array of `info.dimensions` values per text. */
  embed(texts: string[]): Float32Array[];
  /** Token ids the model sees for a text (truncated at `info.maxTokens`). */
  tokenize(text: string): Uint32Array;
  /** Facts about the loaded model. */
  readonly info: ModelInfo;
  /** Frees the wasm memory held by this ranker. */
  free(): void;
  [Symbol.dispose](): void;
}
