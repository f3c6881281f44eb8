/**
 * @file Gradients for the tfjs peers. tfjs-core registers no gradients by itself: the
 * `@tensorflow/tfjs` union package imports `register_all_gradients`, whose ESM files use
 * extension-less imports Deno cannot resolve. So the peers register the ones their networks
 * need, each with tfjs's own formula (tfjs-core 4.22 `dist/gradients/<Kernel>_grad.js`),
 * restricted to the attributes the peers use and throwing on any other, so that a network
 * that strays outside them fails loudly instead of training on a wrong gradient.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Sum `dy` over the axes broadcasting added to reach it from `shape`. */
function sumTo(dy: tf.Tensor, shape: number[]): tf.Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, dy.shape);
  return tf.reshape(axes.length ? tf.sum(dy, axes) : dy, shape);
}

type Saved = tf.Tensor[];

/**
 * The gradient configurations, by kernel: what the toy-CFM MLP (`tfjs_cfm.ts`: Add, Sub,
 * Multiply, BatchMatMul, Sigmoid, Square, Mean) and the DiT (`tfjs_dit.ts`: those, with
 * BatchMatMul's transposes, plus Reshape, Transpose, Softmax, Tanh, Rsqrt, SplitV and
 * GatherV2) differentiate through. `_FusedMatMul` needs none: `tf.fused.matMul` carries its
 * own gradient (a `customGrad`).
 */
const CONFIGS: tf.GradConfig[] = [
  {
    kernelName: "Add",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]: Saved) => ({
      a: () => sumTo(dy as tf.Tensor, a!.shape),
      b: () => sumTo(dy as tf.Tensor, b!.shape),
    }),
  },
  {
    kernelName: "Sub",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]: Saved) => ({
      a: () => sumTo(dy as tf.Tensor, a!.shape),
      b: () => tf.neg(sumTo(dy as tf.Tensor, b!.shape)),
    }),
  },
  {
    kernelName: "Multiply",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]: Saved) => ({
      a: () => sumTo(tf.mul(dy as tf.Tensor, b!), a!.shape),
      b: () => sumTo(tf.mul(dy as tf.Tensor, a!), b!.shape),
    }),
  },
  {
    // tfjs's four cases of op(A)·op(B). Like tfjs's own, no reduction over broadcast batch
    // axes: the peers only multiply operands with equal batch axes (attention) or 2-D ones.
    kernelName: "BatchMatMul",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]: Saved, attrs) => {
      const g = dy as tf.Tensor;
      if (a!.shape.slice(0, -2).join() !== b!.shape.slice(0, -2).join()) {
        throw new Error(
          `the bench registers BatchMatMul's gradient for equal batch axes only, not ` +
            `[${a!.shape}]·[${b!.shape}]`,
        );
      }
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      if (!transposeA && !transposeB) {
        return { a: () => tf.matMul(g, b!, false, true), b: () => tf.matMul(a!, g, true, false) };
      }
      if (!transposeA && transposeB) {
        return { a: () => tf.matMul(g, b!, false, false), b: () => tf.matMul(g, a!, true, false) };
      }
      if (transposeA && !transposeB) {
        return { a: () => tf.matMul(b!, g, false, true), b: () => tf.matMul(a!, g, false, false) };
      }
      return { a: () => tf.matMul(b!, g, true, true), b: () => tf.matMul(g, a!, true, true) };
    },
  },
  {
    kernelName: "Sigmoid",
    outputsToSave: [true],
    gradFunc: (dy, [y]: Saved) => ({
      x: () => tf.mul(dy as tf.Tensor, tf.mul(y!, tf.sub(1, y!))),
    }),
  },
  {
    kernelName: "Tanh",
    outputsToSave: [true],
    gradFunc: (dy, [y]: Saved) => ({
      x: () => tf.mul(tf.sub(1, tf.square(y!)), dy as tf.Tensor),
    }),
  },
  {
    kernelName: "Square",
    inputsToSave: ["x"],
    gradFunc: (dy, [x]: Saved) => ({ x: () => tf.mul(dy as tf.Tensor, tf.mul(x!, 2)) }),
  },
  {
    // d x^(-1/2) = -1/2 · x^(-3/2).
    kernelName: "Rsqrt",
    inputsToSave: ["x"],
    gradFunc: (dy, [x]: Saved) => ({
      x: () => tf.neg(tf.div(dy as tf.Tensor, tf.mul(tf.pow(x!, 1.5), 2))),
    }),
  },
  {
    kernelName: "Mean",
    inputsToSave: ["x"],
    gradFunc: (dy, [x]: Saved, attrs) => {
      const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x!.shape);
      const kept = x!.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const count = axes.reduce((p, i) => p * x!.shape[i]!, 1);
      return {
        x: () => tf.div(tf.mul(tf.reshape(dy as tf.Tensor, kept), tf.ones(x!.shape)), count),
      };
    },
  },
  {
    kernelName: "Reshape",
    inputsToSave: ["x"],
    gradFunc: (dy, [x]: Saved) => ({ x: () => tf.reshape(dy as tf.Tensor, x!.shape) }),
  },
  {
    kernelName: "Transpose",
    gradFunc: (dy, _saved, attrs) => {
      const undo = tf.backend_util.getUndoAxesPermutation(attrs.perm as number[]);
      return { x: () => tf.transpose(dy as tf.Tensor, undo) };
    },
  },
  {
    // dL/dz = y ⊙ (dy − Σ_dim dy ⊙ y), written as tfjs does: dy⊙y − (Σ dy⊙y)·y.
    kernelName: "Softmax",
    outputsToSave: [true],
    gradFunc: (dy, [y]: Saved, attrs) => {
      const dyy = tf.mul(dy as tf.Tensor, y!);
      return { logits: () => tf.sub(dyy, tf.mul(tf.sum(dyy, [attrs.dim as number], true), y!)) };
    },
  },
  {
    // The pieces' gradients side by side (the tape fills zeros for an unused piece).
    kernelName: "SplitV",
    gradFunc: (dy, _saved, attrs) => ({
      x: () => tf.concat(dy as tf.Tensor[], attrs.axis as number),
    }),
  },
  {
    // An embedding lookup (rows of a table): each row's gradient is the sum of the output
    // rows that read it, tfjs's unsortedSegmentSum. Axis 0, no batch axes, only.
    kernelName: "GatherV2",
    inputsToSave: ["x", "indices"],
    gradFunc: (dy, [x, indices]: Saved, attrs) => {
      const axis = tf.util.parseAxisParam(attrs.axis as number, x!.shape)[0];
      if (axis !== 0 || (attrs.batchDims as number) !== 0) {
        throw new Error("the bench registers GatherV2's gradient for rows (axis 0) only");
      }
      const n = indices!.size, inner = x!.shape.slice(1);
      return {
        x: () =>
          tf.unsortedSegmentSum(
            tf.reshape(dy as tf.Tensor, [n, ...inner]),
            tf.reshape(indices!, [n]) as tf.Tensor1D,
            x!.shape[0]!,
          ),
        indices: () => indices!,
      };
    },
  },
];

/**
 * Register the peers' gradients with tfjs, each unless something already has.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { registerTfjsGradients } from "./tfjs_grads.ts";
 * import { loadTfjs } from "./tfjs.ts";
 * await loadTfjs();
 * registerTfjsGradients();
 * const g = tf.grad((x: tf.Tensor) => tf.mean(tf.square(x)))(tf.tensor([1, 3]));
 * console.log(await g.data()); // [1, 3]
 * ```
 */
export function registerTfjsGradients(): void {
  for (const c of CONFIGS) if (!tf.getGradient(c.kernelName)) tf.registerGradient(c);
}
