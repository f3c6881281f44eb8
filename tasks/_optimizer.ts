/**
 * @file The optimizer flags the training tasks share (`train:cfm`, `train:stablevm`):
 * `--optimizer adam|adamw|muon` and Muon's own learning rate, checked together.
 * @module
 */
import { CFM_OPTIMIZERS, type CfmOptimizer } from "../mod.ts";
import type { FlagSpec } from "../cli/mod.ts";

/** The flags (part of each task's flag list). */
export const OPTIMIZER_FLAGS = [
  { name: "optimizer", type: "choice", choices: CFM_OPTIMIZERS, default: "adam", help: "rule" },
  { name: "muon-lr", type: "number", min: 0, help: "Muon's rate for matrices (0.02; muon only)" },
] as const satisfies readonly FlagSpec[];

/**
 * The config's `optimizer` and `muonLr`; `--muon-lr` without `--optimizer muon` would do
 * nothing and is refused.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { resolveOptimizerFlags } from "./_optimizer.ts";
 * assert.deepEqual(resolveOptimizerFlags({ optimizer: "muon", muonLr: 0.01 }), { optimizer: "muon", muonLr: 0.01 });
 * assert.throws(() => resolveOptimizerFlags({ optimizer: "adam", muonLr: 0.01 }), /use it with --optimizer muon/);
 * ```
 */
export function resolveOptimizerFlags(
  f: { optimizer: CfmOptimizer; muonLr?: number },
): { optimizer: CfmOptimizer; muonLr?: number } {
  if (f.muonLr !== undefined && f.optimizer !== "muon") {
    throw new RangeError(`--muon-lr is Muon's learning rate: use it with --optimizer muon`);
  }
  return { optimizer: f.optimizer, ...(f.muonLr !== undefined ? { muonLr: f.muonLr } : {}) };
}
