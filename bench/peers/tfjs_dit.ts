/**
 * @file Peer: the bench's DiT training step in TensorFlow.js (placeholder until written).
 * @module
 */
import type { Spread } from "../cases/common.ts";

/** The result of {@linkcode tfjsDit}. */
export interface TfjsDitResult {
  /** Steps/s over the repetitions. */
  rate: Spread;
  /** Mean loss of the first and last few steps. */
  lossFirst: number;
  lossLast: number;
}

/**
 * Not written yet.
 *
 * @example
 * ```ts
 * import { tfjsDit } from "./tfjs_dit.ts";
 * await tfjsDit({}).catch(() => {});
 * ```
 */
export function tfjsDit(_cfg: unknown): Promise<TfjsDitResult> {
  return Promise.reject(new Error("the tfjs DiT peer is not written"));
}
