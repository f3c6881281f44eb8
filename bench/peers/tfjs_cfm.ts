/**
 * @file Peer: toy conditional flow-matching training in TensorFlow.js on its current backend
 * (WebGPU on the bench's adapter once {@linkcode loadTfjs} has run). Same math as ours and the
 * PyTorch peer: x1 from 8 Gaussians, x0 ~ N(0, I), t ~ U(0, 1), x_t = (1 − t)·x0 + t·x1, MSE
 * against x1 − x0, MLP [x, t] → hidden × depth → 2 with SiLU, `tf.train.adam(1e-3)`.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { loadTfjs } from "./tfjs.ts";
import { registerTfjsGradients } from "./tfjs_grads.ts";

/** The result of {@linkcode tfjsCfm}. */
export interface TfjsCfmResult {
  /** Median steps/s over the repetitions. */
  stepsPerSec: number;
  /** Slowest and fastest repetition (steps/s). */
  stepsPerSecMin: number;
  stepsPerSecMax: number;
  /** Mean loss of the first and last few steps (read after timing). */
  lossFirst: number;
  lossLast: number;
}

/** 8-Gaussians batches on the host, as `eightGaussians` draws ours (then uploaded). */
function hostEightGaussians(n: number, state: { s: number }): Float32Array {
  const s2 = Math.SQRT1_2, std = Math.pow(0.1, 0.25);
  const centers = [[1, 0], [-1, 0], [0, 1], [0, -1], [s2, s2], [s2, -s2], [-s2, s2], [-s2, -s2]];
  const u = () => {
    state.s = (Math.imul(state.s, 1664525) + 1013904223) >>> 0;
    return (state.s + 0.5) / 4294967296;
  };
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const c = centers[Math.min(7, Math.floor(u() * 8))]!;
    const r = Math.sqrt(-2 * Math.log(u())), a = 2 * Math.PI * u();
    out[2 * i] = 5 * c[0]! + std * r * Math.cos(a);
    out[2 * i + 1] = 5 * c[1]! + std * r * Math.sin(a);
  }
  return out;
}

/**
 * Train the toy CFM network for `warmup` untimed steps, then `reps` timed runs of `steps`
 * steps each; a run ends with one 4-byte read of the last loss, which waits for the queue.
 *
 * @example
 * ```ts
 * import { tfjsCfm } from "./tfjs_cfm.ts";
 * const r = await tfjsCfm({ batch: 8, hidden: 8, depth: 1, warmup: 1, steps: 2, reps: 1 });
 * if (!(r.stepsPerSec > 0) || !Number.isFinite(r.lossLast)) throw new Error("bad");
 * ```
 */
export async function tfjsCfm(args: {
  batch: number;
  hidden: number;
  depth: number;
  warmup: number;
  steps: number;
  reps: number;
}): Promise<TfjsCfmResult> {
  await loadTfjs();
  registerTfjsGradients();
  const { batch: b, hidden, depth } = args;
  const widths = [3, ...Array(depth).fill(hidden), 2] as number[];
  // Kaiming-uniform-like init, as torch.nn.Linear; the init scheme is not what is measured.
  const vars: tf.Variable[] = [];
  for (let i = 0; i + 1 < widths.length; i++) {
    const bound = 1 / Math.sqrt(widths[i]!);
    vars.push(
      tf.variable(tf.randomUniform([widths[i]!, widths[i + 1]!], -bound, bound, "float32", i)),
      tf.variable(tf.randomUniform([widths[i + 1]!], -bound, bound, "float32", 100 + i)),
    );
  }
  const opt = tf.train.adam(1e-3);
  const rng = { s: 12345 };
  const losses: tf.Scalar[] = [];
  const step = () => {
    const x1 = tf.tensor2d(hostEightGaussians(b, rng), [b, 2]);
    const cost = opt.minimize(
      () => {
        const x0 = tf.randomNormal([b, 2]);
        const t = tf.randomUniform([b, 1]);
        const xt = tf.add(tf.mul(tf.sub(1, t), x0), tf.mul(t, x1));
        let h: tf.Tensor = tf.concat([xt, t], 1);
        for (let i = 0; i < vars.length; i += 2) {
          h = tf.add(tf.matMul(h, vars[i]!), vars[i + 1]!);
          if (i + 2 < vars.length) h = tf.mul(h, tf.sigmoid(h));
        }
        return tf.mean(tf.square(tf.sub(h, tf.sub(x1, x0)))) as tf.Scalar;
      },
      true,
      vars,
    )!;
    x1.dispose();
    losses.push(cost);
    return cost;
  };
  try {
    for (let i = 0; i < args.warmup; i++) step();
    if (losses.length) await losses[losses.length - 1]!.data();
    const rates: number[] = [];
    for (let r = 0; r < args.reps; r++) {
      const t0 = performance.now();
      let last: tf.Scalar | undefined;
      for (let i = 0; i < args.steps; i++) last = step();
      await last!.data();
      rates.push(args.steps / ((performance.now() - t0) / 1000));
    }
    const ls = await Promise.all(losses.map(async (l) => (await l.data())[0]!));
    const k = Math.max(1, Math.min(3, ls.length >> 1));
    const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    rates.sort((x, y) => x - y);
    const h = rates.length >> 1;
    return {
      stepsPerSec: rates.length % 2 ? rates[h]! : (rates[h - 1]! + rates[h]!) / 2,
      stepsPerSecMin: rates[0]!,
      stepsPerSecMax: rates[rates.length - 1]!,
      lossFirst: avg(ls.slice(0, k)),
      lossLast: avg(ls.slice(-k)),
    };
  } finally {
    tf.dispose(losses);
    tf.dispose(vars);
    opt.dispose();
  }
}
