/**
 * @file Peer: the `dit` bench case's training step in TensorFlow.js on its current backend
 * (WebGPU on the bench's adapter once {@linkcode loadTfjs} has run). The network is
 * tasks/torch/models.py's `DiT` (the PyTorch peer's, and ours): one-channel square images,
 * patch embedding, fixed 2-D sin-cos positions, a 256-frequency timestep embedding through
 * Linear–SiLU–Linear plus a label embedding (a null class, 10 % label dropout), `depth` blocks
 * of AdaLN-Zero-modulated attention and GELU-tanh MLP (ratio 4) under LayerNorm without affine
 * (eps 1e-6), a modulated final layer, unpatchify. The loss is the same CFM loss: t ~ U(0, 1),
 * x_t = (1 − t)·x0 + t·x1, MSE against x1 − x0; the optimizer `tf.train.adam(1e-4)`.
 *
 * Gradients come from tfjs's tape with the kernels' gradients registered by hand
 * (`tfjs_grads.ts`), since tfjs-core registers none under Deno. The network is written the
 * way a tfjs user would write it for speed: `tf.fused.matMul` with the bias in its epilogue
 * for every linear layer (it carries its own gradient), one SiLU of the conditioning shared by
 * all modulations, everything else from plain tfjs ops (tfjs fuses no elementwise chains).
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs-core";
import { loadTfjs } from "./tfjs.ts";
import { registerTfjsGradients } from "./tfjs_grads.ts";

/** The network's sizes (a structural subset of `bench/cases/dit.ts`'s `DitBenchConfig`). */
export interface TfjsDitNetConfig {
  hidden: number;
  depth: number;
  heads: number;
  patch: number;
  /** Image side (square, one channel). */
  size: number;
  classes: number;
}

/** The timed run: the network, batch, and how long to time it. */
export interface TfjsDitConfig extends TfjsDitNetConfig {
  batch: number;
  warmup: number;
  /** Steps per timed repetition (each repetition ends with one read of its last loss). */
  steps: number;
  /** Timed repetitions at most. */
  reps: number;
  /**
   * No repetition starts once this many seconds of timing have passed (the first always
   * runs): tfjs-webgpu on a CPU adapter takes seconds per DiT step.
   */
  maxSeconds?: number;
}

/** A DiT in tfjs: its trainable variables and its CFM loss on given noise, times and labels. */
export interface TfjsDit {
  /** Trainable variables, in the order of {@linkcode TfjsDit.names}. */
  vars: tf.Variable[];
  /** tasks/torch/models.py names of the variables (weights stored [in, out]). */
  names: string[];
  /** The velocity for x_t [B, 1, size, size], t [B] and labels [B] (int32, null class allowed). */
  forward(xt: tf.Tensor, t: tf.Tensor, labels: tf.Tensor): tf.Tensor;
  /** mean((v(x_t, t, labels) − (x1 − x0))²) with x_t = (1 − t)·x0 + t·x1. */
  loss(x1: tf.Tensor, x0: tf.Tensor, t: tf.Tensor, labels: tf.Tensor): tf.Scalar;
  dispose(): void;
}

/** DiT/MAE's fixed 2-D sin-cos table [grid², dim] (column index first), as models.py's. */
function posEmbed(dim: number, grid: number): Float32Array {
  const out = new Float32Array(grid * grid * dim), half = dim / 2, q = half / 2;
  for (let i = 0; i < grid; i++) {
    for (let j = 0; j < grid; j++) {
      const row = (i * grid + j) * dim;
      // The first half encodes the column j, the second the row i: [sin, cos] each.
      for (const [off, pos] of [[0, j], [half, i]] as const) {
        for (let k = 0; k < q; k++) {
          const a = pos / Math.pow(10000, k / q);
          out[row + off + k] = Math.sin(a);
          out[row + off + q + k] = Math.cos(a);
        }
      }
    }
  }
  return out;
}

/**
 * Build the DiT with the reference initialisation (Xavier-uniform linears with zero biases,
 * N(0, 0.02) label table and timestep MLP, zero AdaLN-Zero modulations and final linear).
 * Values do not have to match ours or PyTorch's: only their cost is measured.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { tfjsDitNet } from "./tfjs_dit.ts";
 * import { loadTfjs } from "./tfjs.ts";
 * await loadTfjs();
 * const net = tfjsDitNet({ hidden: 8, depth: 1, heads: 2, patch: 4, size: 8, classes: 10 });
 * const v = net.forward(tf.zeros([2, 1, 8, 8]), tf.tensor1d([0.1, 0.9]), tf.tensor1d([3, 10], "int32"));
 * console.log(v.shape); // [2, 1, 8, 8] (zeros: the final layer starts at zero)
 * v.dispose();
 * net.dispose();
 * ```
 */
export function tfjsDitNet(cfg: TfjsDitNetConfig, seed = 0): TfjsDit {
  const { hidden: h, depth, heads, patch: p, size, classes } = cfg;
  if (size % p !== 0) throw new RangeError(`Expected size ${size} to be a multiple of patch ${p}`);
  if (h % heads !== 0 || h % 4 !== 0) {
    throw new RangeError(`Expected hidden ${h} to be a multiple of heads ${heads} and of 4`);
  }
  const g = size / p, tokens = g * g, hd = h / heads, freq = 256;
  const vars: tf.Variable[] = [], names: string[] = [];
  let s = seed * 1000;
  const add = (name: string, v: tf.Tensor) => {
    // Auto-named: tfjs variable names are global, and tests build several networks.
    vars.push(tf.variable(v));
    names.push(name);
    v.dispose();
    return vars[vars.length - 1]!;
  };
  const xavier = (name: string, fanIn: number, fanOut: number) => {
    const bound = Math.sqrt(6 / (fanIn + fanOut));
    return add(name, tf.randomUniform([fanIn, fanOut], -bound, bound, "float32", s++));
  };
  const normal = (name: string, shape: number[]) =>
    add(name, tf.randomNormal(shape, 0, 0.02, "float32", s++));
  const zeros = (name: string, shape: number[]) => add(name, tf.zeros(shape));
  type Lin = { w: tf.Variable; b: tf.Variable };
  const linear = (name: string, fanIn: number, fanOut: number, init: "xavier" | "zero"): Lin => {
    const w = `${name}.weight`;
    return {
      w: init === "xavier" ? xavier(w, fanIn, fanOut) : zeros(w, [fanIn, fanOut]),
      b: zeros(`${name}.bias`, [fanOut]),
    };
  };
  const xEmb = linear("x_embedder.proj", p * p, h, "xavier");
  const tEmb0 = {
    w: normal("t_embedder.mlp.0.weight", [freq, h]),
    b: zeros("t_embedder.mlp.0.bias", [h]),
  };
  const tEmb2 = {
    w: normal("t_embedder.mlp.2.weight", [h, h]),
    b: zeros("t_embedder.mlp.2.bias", [h]),
  };
  const table = normal("y_embedder.embedding_table.weight", [classes + 1, h]);
  const blocks = Array.from({ length: depth }, (_, i) => ({
    ada: linear(`blocks.${i}.adaLN_modulation.1`, h, 6 * h, "zero"),
    qkv: linear(`blocks.${i}.attn.qkv`, h, 3 * h, "xavier"),
    proj: linear(`blocks.${i}.attn.proj`, h, h, "xavier"),
    fc1: linear(`blocks.${i}.mlp.fc1`, h, 4 * h, "xavier"),
    fc2: linear(`blocks.${i}.mlp.fc2`, 4 * h, h, "xavier"),
  }));
  const finalAda = linear("final_layer.adaLN_modulation.1", h, 2 * h, "zero");
  const finalLin = linear("final_layer.linear", h, p * p, "zero");
  const pos = tf.tensor(posEmbed(h, g), [1, tokens, h]);
  const freqs = tf.tensor(
    Float32Array.from(
      { length: freq / 2 },
      (_, i) => Math.exp((-Math.log(10000) * i) / (freq / 2)),
    ),
    [1, freq / 2],
  );

  const lin = (x: tf.Tensor, l: Lin) => tf.fused.matMul({ a: x as tf.Tensor2D, b: l.w, bias: l.b });
  const silu = (x: tf.Tensor) => tf.mul(x, tf.sigmoid(x));
  // GELU, tanh approximation: x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³))).
  const gelu = (x: tf.Tensor) => {
    const u = tf.mul(tf.mul(x, tf.add(tf.mul(tf.square(x), 0.044715), 1)), Math.sqrt(2 / Math.PI));
    return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(u), 1));
  };
  // LayerNorm over the last axis without affine, eps 1e-6 (biased variance, as PyTorch).
  const layerNorm = (x: tf.Tensor) => {
    const xc = tf.sub(x, tf.mean(x, -1, true));
    return tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-6)));
  };
  // x [B, T, H] · (1 + scale) + shift, with scale and shift [B, H] broadcast over tokens.
  const modulate = (x: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor) => {
    const b = x.shape[0]!;
    return tf.add(
      tf.mul(x, tf.add(tf.reshape(scale, [b, 1, h]), 1)),
      tf.reshape(shift, [b, 1, h]),
    );
  };
  const attention = (x: tf.Tensor, blk: (typeof blocks)[number]) => {
    const b = x.shape[0]!;
    const qkv = tf.transpose(
      tf.reshape(lin(tf.reshape(x, [b * tokens, h]), blk.qkv), [b, tokens, 3, heads, hd]),
      [2, 0, 3, 1, 4],
    );
    const [q, k, v] = tf.split(qkv, 3, 0).map((y) => tf.reshape(y, [b * heads, tokens, hd]));
    // The 1/√hd scale on q (B·heads·T·hd values) rather than on the scores (·T·T).
    const att = tf.softmax(tf.matMul(tf.mul(q!, 1 / Math.sqrt(hd)), k!, false, true));
    const o = tf.transpose(tf.reshape(tf.matMul(att, v!), [b, heads, tokens, hd]), [0, 2, 1, 3]);
    return tf.reshape(lin(tf.reshape(o, [b * tokens, h]), blk.proj), [b, tokens, h]);
  };
  const forward = (xt: tf.Tensor, t: tf.Tensor, labels: tf.Tensor) => {
    const b = xt.shape[0]!;
    // Patchify [B, 1, S, S] → [B·T, p·p] (the stride-p convolution as a matmul).
    const patches = tf.reshape(
      tf.transpose(tf.reshape(xt, [b, g, p, g, p]), [0, 1, 3, 2, 4]),
      [b * tokens, p * p],
    );
    let x = tf.add(tf.reshape(lin(patches, xEmb), [b, tokens, h]), pos);
    const args = tf.mul(tf.reshape(t, [b, 1]), freqs);
    const tFeat = tf.concat([tf.cos(args), tf.sin(args)], 1);
    const c = tf.add(lin(silu(lin(tFeat, tEmb0)), tEmb2), tf.gather(table, labels));
    // Every adaLN_modulation starts with SiLU(c): computed once, used by all.
    const sc = silu(c);
    for (const blk of blocks) {
      const [sh1, sc1, g1, sh2, sc2, g2] = tf.split(lin(sc, blk.ada), 6, 1);
      const a = attention(modulate(layerNorm(x), sh1!, sc1!), blk);
      x = tf.add(x, tf.mul(tf.reshape(g1!, [b, 1, h]), a));
      const m = tf.reshape(modulate(layerNorm(x), sh2!, sc2!), [b * tokens, h]);
      const f = tf.reshape(lin(gelu(lin(m, blk.fc1)), blk.fc2), [b, tokens, h]);
      x = tf.add(x, tf.mul(tf.reshape(g2!, [b, 1, h]), f));
    }
    const [shift, scale] = tf.split(lin(sc, finalAda), 2, 1);
    const out = lin(tf.reshape(modulate(layerNorm(x), shift!, scale!), [b * tokens, h]), finalLin);
    // Unpatchify [B·T, p·p] → [B, 1, S, S] (models.py's einsum "nhwpqc->nchpwq", c = 1).
    return tf.reshape(
      tf.transpose(tf.reshape(out, [b, g, g, p, p]), [0, 1, 3, 2, 4]),
      [b, 1, size, size],
    );
  };
  return {
    vars,
    names,
    forward,
    loss(x1, x0, t, labels) {
      const b = x1.shape[0]!;
      const tt = tf.reshape(t, [b, 1, 1, 1]);
      const xt = tf.add(tf.mul(tf.sub(1, tt), x0), tf.mul(tt, x1));
      return tf.mean(tf.square(tf.sub(forward(xt, t, labels), tf.sub(x1, x0)))) as tf.Scalar;
    },
    dispose() {
      tf.dispose([...vars, pos, freqs]);
    },
  };
}

/** The result of {@linkcode tfjsDit}. */
export interface TfjsDitResult {
  /** Median steps/s over the timed repetitions. */
  stepsPerSec: number;
  /** Slowest and fastest repetition (steps/s). */
  stepsPerSecMin: number;
  stepsPerSecMax: number;
  /** Steps and repetitions timed (fewer than asked when `maxSeconds` ran out). */
  stepsTimed: number;
  repsTimed: number;
  /** Process CPU time per timed step (lavapipe's workers run in this process too). */
  cpuMsPerStep: number;
  /** Mean loss of the first and last few steps (read after timing). */
  lossFirst: number;
  lossLast: number;
}

/** Seeded noise images in [−1, 1] and labels, when the caller passes no data. */
function noisePool(n: number, size: number): { images: Float32Array; labels: Float32Array } {
  const images = new Float32Array(n * size * size), labels = new Float32Array(n);
  let s = 12345;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  for (let i = 0; i < images.length; i++) images[i] = 2 * u() - 1;
  for (let i = 0; i < n; i++) labels[i] = Math.floor(u() * 10);
  return { images, labels };
}

/**
 * Train the DiT for `warmup` untimed steps, then up to `reps` timed runs of `steps` steps
 * each (none starts after `maxSeconds`); a run ends with one 4-byte read of its last loss,
 * which waits for the queue. Batches cycle through `data` (images [n, size²] in [−1, 1] and
 * labels), uploaded once, as ours cycle through theirs; without `data`, seeded noise.
 *
 * @example
 * ```ts
 * import { tfjsDit } from "./tfjs_dit.ts";
 * const r = await tfjsDit({
 *   batch: 2, hidden: 8, depth: 1, heads: 2, patch: 4, size: 8, classes: 10,
 *   warmup: 1, steps: 1, reps: 2,
 * });
 * if (!(r.stepsPerSec > 0) || r.stepsTimed !== 2 || !Number.isFinite(r.lossLast)) {
 *   throw new Error("bad");
 * }
 * ```
 */
export async function tfjsDit(
  cfg: TfjsDitConfig,
  data?: { images: Float32Array; labels: Float32Array },
): Promise<TfjsDitResult> {
  await loadTfjs();
  registerTfjsGradients();
  const { batch: b, size, classes } = cfg;
  const pool = data ?? noisePool(8 * b, size);
  const n = pool.labels.length, nBatches = Math.floor(n / b);
  if (nBatches < 1 || pool.images.length !== n * size * size) {
    throw new RangeError(
      `Expected at least ${b} images of ${size}×${size} with one label each but found ` +
        `${pool.images.length} values and ${n} labels`,
    );
  }
  const images = tf.tensor(pool.images, [n, 1, size, size]);
  const labels = tf.tensor(Int32Array.from(pool.labels), [n], "int32");
  const net = tfjsDitNet(cfg);
  const opt = tf.train.adam(1e-4);
  const losses: tf.Scalar[] = [];
  let i = 0;
  const step = () => {
    const k = (i % nBatches) * b, seed = 1000 + 3 * i++;
    const cost = opt.minimize(
      () => {
        const x1 = tf.slice(images, [k, 0, 0, 0], [b, 1, size, size]);
        const x0 = tf.randomNormal([b, 1, size, size], 0, 1, "float32", seed);
        const t = tf.randomUniform([b], 0, 1, "float32", seed + 1);
        // 10 % label dropout to the null class `classes`, as the LabelEmbedder in training.
        const drop = tf.less(tf.randomUniform([b], 0, 1, "float32", seed + 2), 0.1);
        const y = tf.where(drop, tf.fill([b], classes, "int32"), tf.slice(labels, [k], [b]));
        return net.loss(x1, x0, t, y);
      },
      true,
      net.vars,
    )!;
    losses.push(cost);
    return cost;
  };
  try {
    for (let w = 0; w < cfg.warmup; w++) step();
    if (losses.length) await losses[losses.length - 1]!.data();
    const rates: number[] = [];
    const maxMs = (cfg.maxSeconds ?? Infinity) * 1000;
    const c0 = process.cpuUsage(), t00 = performance.now();
    for (let r = 0; r < cfg.reps && (r === 0 || performance.now() - t00 < maxMs); r++) {
      const t0 = performance.now();
      let last: tf.Scalar | undefined;
      for (let j = 0; j < cfg.steps; j++) last = step();
      await last!.data();
      rates.push(cfg.steps / ((performance.now() - t0) / 1000));
    }
    const cu = process.cpuUsage(c0);
    const ls = await Promise.all(losses.map(async (l) => (await l.data())[0]!));
    const kk = Math.max(1, Math.min(3, ls.length >> 1));
    const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    const sorted = [...rates].sort((x, y) => x - y), h = sorted.length >> 1;
    return {
      stepsPerSec: sorted.length % 2 ? sorted[h]! : (sorted[h - 1]! + sorted[h]!) / 2,
      stepsPerSecMin: sorted[0]!,
      stepsPerSecMax: sorted[sorted.length - 1]!,
      stepsTimed: rates.length * cfg.steps,
      repsTimed: rates.length,
      cpuMsPerStep: (cu.user + cu.system) / 1000 / (rates.length * cfg.steps),
      lossFirst: avg(ls.slice(0, kk)),
      lossLast: avg(ls.slice(-kk)),
    };
  } finally {
    tf.dispose(losses);
    tf.dispose([images, labels]);
    net.dispose();
    opt.dispose();
  }
}
