/**
 * flowgpu: flow-matching generative models on WebGPU, with its own tensor engine.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randn, valueAndGrad } from "./mod.ts";
 * const x = randn([4, 2], { seed: 0 });
 * // loss = mean(w²) over 8 entries, so d loss / dw = 2w/8.
 * const [loss, g] = valueAndGrad((w: typeof x) => w.mul(w).mean())(x);
 * const xs = await x.data(), gs = await g.data();
 * assert.ok(Math.abs(await loss.item() - xs.reduce((s, v) => s + v * v, 0) / 8) < 1e-6);
 * xs.forEach((v, i) => assert.ok(Math.abs(gs[i]! - v / 4) < 1e-6));
 * ```
 * @module
 */
export * from "./lib/ops/mod.ts";
export { keep, Tensor, type TensorTree, tidy, treeLeaves, treeMap } from "./lib/tensor.ts";
export {
  backendByName,
  type BackendName,
  getBackend,
  hasBackend,
  init,
  type InitOptions,
  setBackend,
} from "./lib/backend/select.ts";
export type {
  Backend,
  ElementwiseGroup,
  MatmulEpilogue,
  MatmulOutputs,
  Storage,
  View,
} from "./lib/backend/backend.ts";
export type { RandomKind, RandomState } from "./lib/philox.ts";
export type { CaptureHooks, Dyn, TraceEnv } from "./lib/capture.ts";
export type { Axes } from "./lib/ops/ops.ts";
export type { BinaryOp, Expr, MatmulGeom, ReduceOp, UnaryOp } from "./lib/ir.ts";
export {
  Generator,
  type GeneratorState,
  manualSeed,
  permutation,
  rand,
  randint,
  randn,
  randnLike,
  type RandomOptions,
} from "./lib/random.ts";
export { grad, type GradOptions, jvp, valueAndGrad, vjp } from "./lib/autodiff/mod.ts";
// ---- layers above the engine (each lib/<layer>/mod.ts owns its exports) ----
/** Neural-network modules (PyTorch-style names): layers, DiT/SiT, toy velocity nets. */
export * as nn from "./lib/nn/mod.ts";
/** Optimizers (SGD, Adam, AdamW, RAdam), gradient clipping, EMA and LR schedules. */
export * as optim from "./lib/optim/mod.ts";
// Their types also at the top level, so that signatures elsewhere (the training loop's
// `Trainer`, `EMA`, `Optimizer`) name public types (deno doc --lint).
export type * from "./lib/nn/mod.ts";
export type * from "./lib/optim/mod.ts";
export * from "./lib/ot/mod.ts";
export * from "./lib/io/mod.ts";
export * from "./lib/flow/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/metrics/mod.ts";
export * from "./lib/data/gmm.ts";
export * from "./lib/flow/stablevm.ts";
export * from "./lib/flow/repa.ts";
export * from "./lib/flow/flowmap.ts";
export * from "./lib/metrics/flowmap.ts";
export * from "./lib/metrics/fisher.ts";
export * from "./lib/metrics/kmeans.ts";
export * from "./lib/train/mod.ts";
