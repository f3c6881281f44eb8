/**
 * @file An independent f64 implementation of `nn.VAE` in plain JS (the tests' reference):
 * the forward pass from the parameters by name, the reparameterised reconstruction, and the
 * VAE loss, written from the formulas rather than from the engine's code.
 * @module
 */
import type { nn } from "../mod.ts";

/** The parameters of a VAE in `namedParameters` order, as f64 arrays with their names and shapes. */
export interface Params64 {
  /** Parameter names. */
  names: string[];
  /** Shapes by position. */
  shapes: number[][];
  /** Values by position. */
  values: Float64Array[];
}

/**
 * Read a VAE's parameters as f64 arrays.
 *
 * @example
 * ```ts
 * import { nn } from "../mod.ts";
 * import { params64 } from "./_vae.ts";
 * const p = await params64(new nn.VAE({ inputDim: 4, latentDim: 1, hidden: [2], seed: 0 }));
 * if (p.names[0] !== "encoder.0.weight") throw new Error("bad");
 * ```
 */
export async function params64(m: nn.VAE): Promise<Params64> {
  const named = [...m.namedParameters()];
  return {
    names: named.map(([n]) => n),
    shapes: named.map(([, t]) => [...t.shape]),
    values: await Promise.all(named.map(async ([, t]) => Float64Array.from(await t.data()))),
  };
}

/** y = W·x + b for one row, W [out, in]. */
function affine(W: Float64Array, b: Float64Array, x: ArrayLike<number>): number[] {
  const out = b.length, inp = x.length;
  return Array.from({ length: out }, (_, o) => {
    let s = b[o]!;
    for (let i = 0; i < inp; i++) s += W[o * inp + i]! * x[i]!;
    return s;
  });
}

/** What {@linkcode forward64} returns, row-major over the n rows. */
export interface Forward64 {
  /** μ [n, d]. */
  mu: number[][];
  /** log σ² [n, d]. */
  logvar: number[][];
  /** decode(μ + exp(½ log σ²)·ε) [n, inputDim] (ε = 0 when not given: decode(μ)). */
  recon: number[][];
}

/**
 * The VAE's forward pass in f64: encoder Linear+ReLU layers, μ and log σ² heads, then the
 * decoder's Linear+ReLU layers and a final Linear with tanh, on rows of `x`.
 *
 * @example
 * ```ts
 * import { nn } from "../mod.ts";
 * import { forward64, params64 } from "./_vae.ts";
 * const p = await params64(new nn.VAE({ inputDim: 4, latentDim: 1, hidden: [2], seed: 0 }));
 * if (forward64(p, [0, 0, 0, 0], 1).recon[0]!.length !== 4) throw new Error("bad");
 * ```
 */
export function forward64(
  p: Params64,
  x: ArrayLike<number>,
  n: number,
  eps?: ArrayLike<number>,
): Forward64 {
  const get = (name: string) => p.values[p.names.indexOf(name)]!;
  const layers = (prefix: string) =>
    p.names.filter((k) => k.startsWith(prefix) && k.endsWith(".weight")).map((k) =>
      k.slice(0, -".weight".length)
    );
  const enc = layers("encoder."), dec = layers("decoder.");
  const inDim = x.length / n, d = get("fc_mu.bias").length;
  const out: Forward64 = { mu: [], logvar: [], recon: [] };
  for (let r = 0; r < n; r++) {
    let h: number[] = Array.from({ length: inDim }, (_, i) => x[r * inDim + i]!);
    for (const l of enc) {
      h = affine(get(`${l}.weight`), get(`${l}.bias`), h).map((v) => Math.max(v, 0));
    }
    const mu = affine(get("fc_mu.weight"), get("fc_mu.bias"), h);
    const lv = affine(get("fc_logvar.weight"), get("fc_logvar.bias"), h);
    let z = mu.map((m, k) => m + Math.exp(0.5 * lv[k]!) * (eps ? eps[r * d + k]! : 0));
    for (let i = 0; i < dec.length; i++) {
      const y = affine(get(`${dec[i]}.weight`), get(`${dec[i]}.bias`), z);
      z = i + 1 < dec.length ? y.map((v) => Math.max(v, 0)) : y.map(Math.tanh);
    }
    out.mu.push(mu), out.logvar.push(lv), out.recon.push(z);
  }
  return out;
}

/**
 * The VAE loss in f64: mean squared error over all pixels + β · (batch mean of
 * ½ Σ_d (μ² + σ² − 1 − log σ²)); also returns the two parts.
 *
 * @example
 * ```ts
 * import { loss64 } from "./_vae.ts";
 * const r = loss64({ mu: [[1]], logvar: [[0]], recon: [[0, 1]] }, [0, 0], 0.1);
 * if (Math.abs(r.loss - 0.55) > 1e-12) throw new Error("bad");
 * ```
 */
export function loss64(
  f: Forward64,
  x: ArrayLike<number>,
  beta: number,
): { loss: number; recon: number; kl: number } {
  const n = f.recon.length, px = f.recon[0]!.length;
  let se = 0, kl = 0;
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < px; i++) se += (f.recon[r]![i]! - x[r * px + i]!) ** 2;
    f.mu[r]!.forEach((m, k) => {
      const lv = f.logvar[r]![k]!;
      kl += 0.5 * (m * m + Math.exp(lv) - 1 - lv);
    });
  }
  const recon = se / (n * px);
  return { loss: recon + beta * kl / n, recon, kl: kl / n };
}

/** The f64 decoder applied to normalised codes z: decode(mean + std·z), via μ = code, ε = 0. */
export function decode64(
  p: Params64,
  z: Float32Array,
  mean: number[],
  std: number[],
): number[] {
  const d = mean.length;
  const names = p.names.filter((k) => k.startsWith("decoder."));
  const get = (n: string) => p.values[p.names.indexOf(n)]!;
  const out: number[] = [];
  for (let r = 0; r < z.length / d; r++) {
    let h = Array.from({ length: d }, (_, k) => mean[k]! + std[k]! * z[r * d + k]!);
    const layers = names.filter((k) => k.endsWith(".weight")).map((k) => k.slice(0, -7));
    layers.forEach((l, i) => {
      const W = get(`${l}.weight`), b = get(`${l}.bias`);
      const y = Array.from(b, (bo, o) => h.reduce((s, v, j) => s + W[o * h.length + j]! * v, bo));
      h = i + 1 < layers.length ? y.map((v) => Math.max(v, 0)) : y.map(Math.tanh);
    });
    out.push(...h);
  }
  return out;
}
