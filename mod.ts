/**
 * flowgpu: flow-matching generative models on WebGPU, with its own tensor engine.
 *
 * @example
 * ```ts
 * import { randn, valueAndGrad } from "./mod.ts";
 * const x = randn([4, 2], { seed: 0 });
 * const [loss, g] = valueAndGrad((w: typeof x) => w.mul(w).mean())(x);
 * console.log(await loss.item(), g.shape);
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
  setBackend,
} from "./lib/backend/select.ts";
export type { Backend, BinaryOp, ReduceOp, UnaryOp } from "./lib/backend/backend.ts";
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
export * as nn from "./lib/nn/mod.ts";
export * as optim from "./lib/optim/mod.ts";
export * from "./lib/ot/mod.ts";
export * from "./lib/io/mod.ts";
export * from "./lib/flow/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/metrics/mod.ts";
export * from "./lib/data/gmm.ts";
export * from "./lib/flow/stablevm.ts";
export * from "./lib/flow/repa.ts";
export * from "./lib/metrics/fisher.ts";
export * from "./lib/metrics/kmeans.ts";
export * from "./lib/train/mod.ts";
